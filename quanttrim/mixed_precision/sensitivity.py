"""Per-layer sensitivity for bit allocation: thesis Algorithm 1 and a cheaper weight-SNR alternative.

* ``gradient_sensitivity`` (Algorithm 1, Eqs. 3.1–3.3): for each Conv/Linear layer, add Gaussian noise
  δW ~ N(0, σ²) with σ = ε/‖W‖ to its weights, back-propagate the loss on calibration batches and
  average ‖∇_{W'} L‖₁ over N trials; restore W. Cost: layers × N × batches forward+backward passes.
* ``snr_sensitivity`` (no data, no backward): quantize each layer's weights at every candidate bit
  width (symmetric, per output channel, round half to even as ONNX QuantizeLinear does) and measure the
  signal-to-quantization-noise ratio; the scalar sensitivity is P_ℓ·‖W − Q_b(W)‖²/‖W‖² at the lowest
  bit width (the relative noise energy, extensive in P like the L1 gradient norm). It sees weight
  distributions only, not how the loss reacts: long-tailed layers score high, but a layer with one
  huge outlier scores *low* (the outlier dominates the signal energy and is represented exactly).

Both work on any ``torch.nn.Module``; layers are found by ``isinstance`` (so wrapped quantized modules
that subclass Conv/Linear are found too) and named by ``named_modules``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Default ε of Eq. 3.1 (the thesis does not state its value).
DEFAULT_EPSILON = 1e-2
NOISE_SCALES = ("inverse_norm", "relative_rms")


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's result: module name, sensitivity score and parameter count of its weight."""

    name: str
    sensitivity: float
    params: int
    kind: str  # "Conv2d", "Linear", ...
    #: Extra per-layer facts (SNR per bit width for the SNR method, trial spread for the gradient one).
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SensitivityConfig:
    """Algorithm 1 settings.

    Args:
        epsilon: ε in σ = ε/‖W‖ (Eq. 3.1).
        trials: N perturbations averaged per batch (Eq. 3.3).
        batches: calibration batches used per trial (the thesis breaks after one).
        noise_scale: "inverse_norm" is σ = ε/‖W‖ as written in the thesis; "relative_rms" is
            σ = ε·‖W‖/√P (noise RMS a fixed fraction of the weight RMS), offered because the thesis's form
            perturbs small-norm layers *more*.
        seed: RNG seed for the perturbations (results are reproducible).
    """

    epsilon: float = DEFAULT_EPSILON
    trials: int = 8
    batches: int = 1
    noise_scale: str = "inverse_norm"
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.epsilon >= 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"epsilon must be finite and >= 0, got {self.epsilon}")
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        if self.batches < 1:
            raise ValueError(f"batches must be >= 1, got {self.batches}")
        if self.noise_scale not in NOISE_SCALES:
            raise ValueError(f"unknown noise_scale {self.noise_scale!r}; valid: {', '.join(NOISE_SCALES)}")


def quantizable_layers(model: "torch.nn.Module") -> list[tuple[str, "torch.nn.Module"]]:
    """(name, module) for every Conv/Linear module with a weight, in definition order."""
    import torch.nn as nn

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    out = []
    for name, m in model.named_modules():
        if isinstance(m, kinds) and getattr(m, "weight", None) is not None:
            out.append((name, m))
    if not out:
        raise ValueError(f"{type(model).__name__} has no Conv/Linear layers to analyse")
    return out


def _batches(data: Iterable[Any], n: int) -> list[tuple["torch.Tensor", "torch.Tensor"]]:
    out = []
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("calibration data must yield (inputs, targets) pairs")
        out.append((batch[0], batch[1]))
        if len(out) >= n:
            break
    if not out:
        raise ValueError("calibration data yielded no batches")
    return out


def gradient_sensitivity(
    model: "torch.nn.Module",
    data: Iterable[Any],
    loss_fn: Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"] | None = None,
    config: SensitivityConfig = SensitivityConfig(),
    layers: Sequence[str] | None = None,
) -> list[LayerSensitivity]:
    """Thesis Algorithm 1: S_ℓ = mean over N noisy copies of ‖∇_{W_ℓ'} L‖₁ (model left unchanged).

    Args:
        model: any module; it is put in eval mode for the analysis and its mode restored afterwards.
        data: iterable of (inputs, targets) calibration batches (a DataLoader or a list).
        loss_fn: loss(outputs, targets); cross-entropy by default.
        config: ε, N, batches, noise scaling, seed.
        layers: restrict to these module names (default: every Conv/Linear layer).
    """
    import torch
    import torch.nn.functional as F

    loss_fn = loss_fn or F.cross_entropy
    batches = _batches(data, config.batches)
    targets = _select(quantizable_layers(model), layers)
    was_training = model.training
    requires = {p: p.requires_grad for p in model.parameters()}
    gen = torch.Generator().manual_seed(config.seed)
    results: list[LayerSensitivity] = []
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(False)  # only the analysed layer needs a weight gradient: cheaper backward
        for name, module in targets:
            w = module.weight
            original = w.detach().clone()
            norm = float(original.norm())
            if config.noise_scale == "inverse_norm":
                sigma = config.epsilon / max(norm, 1e-12)
            else:
                sigma = config.epsilon * norm / math.sqrt(original.numel())
            scores: list[float] = []
            w.requires_grad_(True)
            try:
                for x, y in batches:
                    for _ in range(config.trials):
                        noise = torch.randn(original.shape, generator=gen, dtype=original.dtype) * sigma
                        with torch.no_grad():
                            w.copy_(original + noise.to(original.device))
                        w.grad = None
                        loss = loss_fn(model(x), y)
                        loss.backward()
                        scores.append(float(w.grad.abs().sum()))
            finally:
                with torch.no_grad():
                    w.copy_(original)
                w.grad = None
                w.requires_grad_(False)
            mean = sum(scores) / len(scores)
            spread = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
            results.append(LayerSensitivity(name, mean, int(original.numel()), type(module).__name__,
                                            {"sigma": sigma, "trials": len(scores), "std": spread}))
    finally:
        for p, r in requires.items():
            p.requires_grad_(r)
        model.train(was_training)
    return results


def quantize_weight(w: "torch.Tensor", bits: int, per_channel: bool = True) -> "torch.Tensor":
    """Symmetric signed fake quantization (z = 0, scale = max|w| / (2^(b-1) − 1), round half to even), per output
    channel (axis 0) or per tensor: the trainer's own weight quantizer (:mod:`quanttrim.quantizers`)."""
    from quanttrim.quantizers import fake_quantize, symmetric_qparams

    w_ = w.detach()
    axis = 0 if per_channel and w.dim() > 1 else None
    amax = w_.abs().reshape(w.shape[0], -1).amax(dim=1) if axis == 0 else w_.abs().max()
    scale, zero, qmin, qmax = symmetric_qparams(amax, bits)
    return fake_quantize(w, scale, zero, qmin, qmax, axis)


def snr_sensitivity(
    model: "torch.nn.Module",
    bits: Sequence[int] = (2, 4, 6, 8),
    per_channel: bool = True,
    layers: Sequence[str] | None = None,
) -> list[LayerSensitivity]:
    """Cheap alternative: weight-quantization SNR (dB) per bit width; sensitivity = P·NSR at the lowest bits."""
    import torch

    from quanttrim.mixed_precision.allocation import validate_bits

    choices = validate_bits(bits)
    out: list[LayerSensitivity] = []
    with torch.no_grad():
        for name, module in _select(quantizable_layers(model), layers):
            w = module.weight.detach().float()
            signal = float((w ** 2).sum())
            snr: dict[int, float] = {}
            nsr: dict[int, float] = {}
            for b in choices:
                noise = float(((w - quantize_weight(w, b, per_channel)) ** 2).sum())
                nsr[b] = noise / signal if signal > 0 else 0.0
                snr[b] = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
            out.append(LayerSensitivity(name, w.numel() * nsr[choices[0]], int(w.numel()), type(module).__name__,
                                        {"snr_db": snr, "reference_bits": choices[0]}))
    return out


def _select(found: list[tuple[str, Any]], names: Sequence[str] | None) -> list[tuple[str, Any]]:
    if names is None:
        return found
    index = dict(found)
    unknown = [n for n in names if n not in index]
    if unknown:
        raise ValueError(f"not Conv/Linear layers of the model: {', '.join(unknown)}; "
                         f"valid: {', '.join(index)}")
    return [(n, index[n]) for n in names]


def default_pinned(results: Sequence[LayerSensitivity], bits: int = 8) -> dict[str, int]:
    """The thesis keeps the first conv and the last linear layer at high precision."""
    if not results:
        return {}
    pinned = {results[0].name: bits}
    linears = [r for r in results if r.kind == "Linear"]
    pinned[(linears[-1] if linears else results[-1]).name] = bits
    return pinned
