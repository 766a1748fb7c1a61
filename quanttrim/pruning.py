"""Reverse pruning (paper §3.2): pin the largest-magnitude weights at a robust threshold.

τ_ℓ = EMA_β of the p_clip quantile of |w_ℓ| (subsampled), then w_ℓ ← clip(w_ℓ, −τ_ℓ, τ_ℓ) on the FP32
master weights, in place. With ``fold_bn`` the threshold is taken on the BatchNorm-folded weight W·γ/σ of
a Conv→BN pair (what the deployed graph quantizes), and applied to W as a per-output-channel bound τ·σ/|γ|.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from quanttrim.observers import sample_quantiles

__all__ = ["reverse_prune_", "prunable_layers", "fold_factor", "clipped_fraction", "ensure_tau_buffers"]

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) for every Conv/Linear with a weight, in module order."""
    return [(n, m) for n, m in module.named_modules() if isinstance(m, _PRUNABLE) and getattr(m, "weight", None) is not None]


def fold_factor(layer: nn.Module) -> torch.Tensor | None:
    """γ/√(σ²+ε) of the BatchNorm that follows ``layer`` (linked by the wrapper), shaped to broadcast over its weight."""
    bn = layer.__dict__.get("_qt_bn")
    if bn is None:
        return None
    inv = torch.rsqrt(bn.running_var + bn.eps)
    f = bn.weight.detach() * inv if bn.weight is not None else inv
    return f.reshape(-1, *([1] * (layer.weight.dim() - 1)))


def ensure_tau_buffers(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Create the ``qt_tau`` buffers a saved state holds so that ``load_state_dict`` can fill them."""
    for name, layer in prunable_layers(module):
        key = f"{name}.qt_tau" if name else "qt_tau"
        if key in state_dict and "qt_tau" not in layer._buffers:
            layer.register_buffer("qt_tau", torch.zeros_like(state_dict[key]))


@torch.no_grad()
def reverse_prune_(
    module: nn.Module,
    p_clip: float,
    *,
    beta: float = 1.0,
    per_channel: bool = False,
    max_samples: int = 100_000,
    generator: torch.Generator | None = None,
    fold_bn: bool = True,
) -> dict[str, torch.Tensor]:
    """Pin every Conv/Linear weight in ``module`` to [−τ, τ] in place; return the thresholds used.

    Args:
        module: model (or single layer) whose weights are clipped.
        p_clip: quantile of |w| defining the fresh threshold τ̂ (e.g. 0.90–0.99).
        beta: EMA momentum, τ = (1−β)·τ_prev + β·τ̂; the first call uses τ̂ itself. State is kept in a
            ``qt_tau`` buffer on each layer, so it is checkpointed.
        per_channel: one τ per output channel instead of one per tensor.
        max_samples: S_max, the subsample size for the quantile.
        generator: RNG for the subsample (deterministic runs).
        fold_bn: threshold the BN-folded weight when the layer is linked to a BatchNorm.
    Returns:
        {layer name: τ} (per-tensor scalars or per-channel vectors, in the folded domain when folded).
    """
    if not 0.0 < p_clip <= 1.0:
        raise ValueError(f"p_clip must be in (0, 1], got {p_clip}")
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    out: dict[str, torch.Tensor] = {}
    for name, layer in prunable_layers(module):
        w = layer.weight
        f = fold_factor(layer) if fold_bn else None
        w_eff = w * f if f is not None else w
        _, tau_hat = sample_quantiles(
            w_eff, None, p_clip, absolute=True, channel_axis=0 if per_channel else None,
            max_samples=max_samples, generator=generator,
        )
        tau_prev = layer._buffers.get("qt_tau")
        if tau_prev is None or tau_prev.shape != tau_hat.shape or not bool(torch.all(tau_prev > 0)):
            tau = tau_hat.clone()
            if "qt_tau" in layer._buffers:
                del layer._buffers["qt_tau"]
            layer.register_buffer("qt_tau", tau)
        else:
            tau_prev.lerp_(tau_hat, beta)
            tau = tau_prev
        bound = tau.reshape(-1, *([1] * (w.dim() - 1))) if per_channel else tau
        if f is not None:
            # |W·f| ≤ τ  ⇔  |W| ≤ τ/|f| per output channel; a dead channel (f = 0) is left alone.
            bound = torch.where(f.abs() > 0, bound / f.abs().clamp_min(1e-30), torch.full_like(f, math.inf))
        bound = bound.expand_as(w) if bound.dim() else bound
        clipped = int((w.abs() > bound).sum())
        w.copy_(torch.maximum(torch.minimum(w, bound), -bound))
        layer.__dict__["_qt_clipped"] = (clipped, w.numel())
        out[name] = tau.detach().clone()
    return out


def clipped_fraction(module: nn.Module) -> float | None:
    """Fraction of weights clipped by the last :func:`reverse_prune_` over ``module`` (None before any pin)."""
    total = clipped = 0
    for _, layer in prunable_layers(module):
        c = layer.__dict__.get("_qt_clipped")
        if c is not None:
            clipped += c[0]
            total += c[1]
    return clipped / total if total else None
