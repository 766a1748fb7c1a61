"""Model wrapping (paper §3.4): weight fake-quant on every Conv/Linear (FP32 master weights kept),
activation fake-quant at the input, after the common nonlinearities, on residual adds and at explicit
``QPoint`` markers (branch ends, pooled features, attention Q/K/V/outputs, logits).

Implementation choices, and why:
- Conv/Linear get their class swapped to a subclass that quantizes the weight inside ``forward``: the
  parameter names and state_dict keys stay those of the plain model, and no weight copy is kept
  (the blended weight is a transient of the forward pass).
- Activations get a forward hook that returns the blended output: the model code stays untouched.
- A Conv followed by a BatchNorm (found by tracing one forward pass) quantizes W·γ/σ (running stats),
  the weight the deployed BN-folded graph actually holds, and maps the error back to W per channel.
- All quantizers share one ``QuantContext`` (λ, whether observers update this step, RNG): the paper's
  single global λ_t.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.conv import _ConvNd

from quanttrim.config import QuantConfig
from quanttrim.models.common import Add, Normalize, QPoint
from quanttrim.observers import EMAQuantileObserver
from quanttrim.pruning import fold_factor
from quanttrim.quantizers import asymmetric_qparams, fake_quant_blend, fake_quantize, symmetric_qparams

__all__ = ["QuantContext", "quantize_model", "strip_quantization", "act_quantizers", "weight_layers",
           "ACTIVATION_TYPES", "snapped_weight", "saturate_weights_", "activation_clip_ranges"]

#: Nonlinearities after which activations are fake-quantized.
ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid)
# Normalize: its output is the first layer's input, which a deployed graph quantizes.
_ACT_POINT_TYPES = ACTIVATION_TYPES + (Add, QPoint, Normalize)


class QuantContext:
    """Run-time state shared by all quantizers of one model (not a module: never checkpointed itself)."""

    def __init__(self, cfg: QuantConfig) -> None:
        self.cfg = cfg
        self.lam = 0.0
        self.observe_now = False
        self.momentum = 1.0 - (1.0 - cfg.momentum) ** cfg.observe_every  # same time constant as per-step μ
        self.generator = torch.Generator().manual_seed(0)
        self.capture: dict[str, torch.Tensor] | None = None

    def set_step(self, global_step: int, lam: float, seed: int) -> None:
        """Per training step: λ_t, whether observers update, and a step-seeded RNG (exact resume)."""
        self.lam = float(lam) if self.cfg.enabled else 0.0
        self.observe_now = (self.cfg.enabled or self.cfg.observe) and global_step % self.cfg.observe_every == 0
        if self.observe_now:
            self.generator.manual_seed(seed * 1_000_003 + global_step)


class WeightQuantizer(nn.Module):
    """Symmetric signed fake-quant of a weight (optionally BN-folded), scale from an EMA |w| quantile."""

    def __init__(self, ctx: QuantContext, out_channels: int) -> None:
        super().__init__()
        self.__dict__["ctx"] = ctx
        cfg = ctx.cfg
        self.observer = EMAQuantileObserver(
            symmetric=True, p_hi=cfg.weight_p_hi, momentum=cfg.momentum,
            channel_axis=0 if cfg.weight_per_channel else None, num_channels=out_channels, max_samples=cfg.max_samples,
        )

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        return symmetric_qparams(self.observer.hi, self.ctx.cfg.weight_bits, self.ctx.cfg.eps)

    def error(self, w: torch.Tensor, f: torch.Tensor | None) -> torch.Tensor:
        """x̂ − x for the weight, in W's own domain (the folded error divided back by the BN factor)."""
        with torch.no_grad():
            w_eff = w * f if f is not None else w
            scale, zp, qmin, qmax = self.qparams()
            axis = 0 if self.ctx.cfg.weight_per_channel else None
            err = fake_quantize(w_eff, scale, zp, qmin, qmax, axis) - w_eff
            if f is not None:
                err = torch.where(f != 0, err / torch.where(f != 0, f, torch.ones_like(f)), torch.zeros_like(err))
            return err

    def forward(self, w: torch.Tensor, f: torch.Tensor | None) -> torch.Tensor:
        ctx = self.ctx
        if self.training and ctx.observe_now:
            self.observer.update(w * f if f is not None else w, ctx.generator, ctx.momentum)
        if ctx.lam == 0.0 or not ctx.cfg.quantize_weights or not self.observer.initialized:
            return w
        return w + ctx.lam * self.error(w, f)


class ActQuantizer(nn.Module):
    """Asymmetric unsigned fake-quant of an activation, range from EMA (p_lo, p_hi) quantiles."""

    def __init__(self, ctx: QuantContext, point: str, channels: int = 1) -> None:
        super().__init__()
        self.__dict__["ctx"] = ctx
        self.__dict__["point"] = point
        cfg = ctx.cfg
        self.observer = EMAQuantileObserver(
            symmetric=False, p_lo=cfg.act_p_lo, p_hi=cfg.act_p_hi, momentum=cfg.momentum,
            channel_axis=1 if cfg.act_per_channel else None, num_channels=channels, max_samples=cfg.max_samples,
        )

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        return asymmetric_qparams(self.observer.lo, self.observer.hi, self.ctx.cfg.act_bits, self.ctx.cfg.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.ctx
        if ctx.capture is not None:
            ctx.capture[self.point] = x.detach().clone()
        if self.training and ctx.observe_now:
            self.observer.update(x, ctx.generator, ctx.momentum)
        if ctx.lam == 0.0 or not ctx.cfg.quantize_activations or not self.observer.initialized:
            return x
        scale, zp, qmin, qmax = self.qparams()
        return fake_quant_blend(x, scale, zp, qmin, qmax, ctx.lam, 1 if ctx.cfg.act_per_channel else None,
                                exact=not ctx.cfg.fast_kernels)


# --- weight layers: class swap -------------------------------------------------------------------
class _ConvQ:
    def _conv_forward(self, input, weight, bias):  # type: ignore[no-untyped-def]
        return super()._conv_forward(input, self.qt_w(weight, fold_factor(self)), bias)  # type: ignore[misc]


class _LinearQ:
    def forward(self, input):  # type: ignore[no-untyped-def]
        return F.linear(input, self.qt_w(self.weight, fold_factor(self)), self.bias)  # type: ignore[attr-defined]


_QCLASSES: dict[type, type] = {}


def _quant_class(cls: type) -> type:
    if cls not in _QCLASSES:
        mixin = _ConvQ if issubclass(cls, _ConvNd) else _LinearQ
        _QCLASSES[cls] = type(f"Quant{cls.__name__}", (mixin, cls), {"_qt_base": cls})
    return _QCLASSES[cls]


def _act_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return module.qt_act(output)


def _input_hook(module: nn.Module, inputs: tuple) -> tuple:
    return (module.qt_input(inputs[0]),) + tuple(inputs[1:])


def _trace_conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, nn.Module]:
    """Conv whose output tensor is the direct input of a BatchNorm, found by running one forward pass."""
    outs: list[tuple[torch.Tensor, nn.Module]] = []
    pairs: dict[nn.Module, nn.Module] = {}
    handles = []

    def conv_hook(m, i, o):  # type: ignore[no-untyped-def]
        outs.append((o, m))

    def bn_hook(m, i):  # type: ignore[no-untyped-def]
        for t, conv in outs:
            if t is i[0] and conv.weight.shape[0] == m.num_features:
                pairs[conv] = m

    for m in model.modules():
        if isinstance(m, _ConvNd):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_pre_hook(bn_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return pairs


def quantize_model(model: nn.Module, cfg: QuantConfig, example_input: torch.Tensor) -> QuantContext:
    """Attach fake quantizers to ``model`` in place and return their shared context (λ starts at 0)."""
    if "_qt_ctx" in model.__dict__:
        raise ValueError("model is already quantization-wrapped")
    ctx = QuantContext(cfg)
    pairs = _trace_conv_bn_pairs(model, example_input) if cfg.fold_bn else {}
    for name, m in list(model.named_modules()):
        if isinstance(m, (_ConvNd, nn.Linear)) and getattr(m, "weight", None) is not None:
            m.add_module("qt_w", WeightQuantizer(ctx, m.weight.shape[0]))
            if m in pairs:
                m.__dict__["_qt_bn"] = pairs[m]
            m.__class__ = _quant_class(type(m))
        elif isinstance(m, _ACT_POINT_TYPES):
            channels = _channels_at(model, name, example_input) if cfg.act_per_channel else 1
            m.add_module("qt_act", ActQuantizer(ctx, name, channels))
            m.__dict__["_qt_hook"] = m.register_forward_hook(_act_hook)
    if cfg.quantize_input:
        model.add_module("qt_input", ActQuantizer(ctx, "input", example_input.shape[1] if cfg.act_per_channel else 1))
        model.__dict__["_qt_hook"] = model.register_forward_pre_hook(_input_hook)
    model.__dict__["_qt_ctx"] = ctx
    return ctx


def _channels_at(model: nn.Module, name: str, example: torch.Tensor) -> int:
    shape: list[int] = []
    h = model.get_submodule(name).register_forward_hook(lambda m, i, o: shape.extend(o.shape))
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(example)
            model.train(was)
    finally:
        h.remove()
    return shape[1] if len(shape) > 1 else 1


def strip_quantization(model: nn.Module) -> nn.Module:
    """Undo :func:`quantize_model` in place (plain FP32 model, plain state_dict keys); returns the model."""
    for m in model.modules():
        h = m.__dict__.pop("_qt_hook", None)
        if h is not None:
            h.remove()
        for child in ("qt_w", "qt_act", "qt_input"):
            if child in m._modules:
                del m._modules[child]
        m.__dict__.pop("_qt_bn", None)
        base = getattr(type(m), "_qt_base", None)
        if base is not None:
            m.__class__ = base
        if "qt_tau" in m._buffers:
            del m._buffers["qt_tau"]
        m.__dict__.pop("_qt_clipped", None)
    model.__dict__.pop("_qt_ctx", None)
    return model


def context(model: nn.Module) -> QuantContext:
    ctx = model.__dict__.get("_qt_ctx")
    if ctx is None:
        raise ValueError("model is not quantization-wrapped (call quanttrim.wrap.quantize_model first)")
    return ctx


def act_quantizers(model: nn.Module) -> dict[str, ActQuantizer]:
    """{point name: quantizer}: point name is the module path whose output is quantized ('input' for the graph input)."""
    out: dict[str, ActQuantizer] = {}
    if "qt_input" in model._modules:
        out["input"] = model.qt_input  # type: ignore[assignment]
    for name, m in model.named_modules():
        if isinstance(m, ActQuantizer) and m.point != "input":
            out[m.point] = m
    return out


def weight_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, m in model.named_modules():
        if "qt_w" in m._modules:
            yield name, m


def snapped_weight(layer: nn.Module) -> torch.Tensor:
    """W moved onto an INT grid (its BN-folded version lies exactly on it): what λ = 1 trains, for export.

    The grid's scale is max|W·γ/σ|/q_max (per tensor, or per channel when so configured) rather than the
    observer's EMA quantile: after the final reverse-pruning pin the two nearly agree (5-10 % of the weights
    sit at ±τ), and with the max the largest weight lands exactly on q_max, so a backend's own symmetric
    max-calibration of the exported weights reproduces this grid and adds no rounding error of its own.
    """
    cfg = layer.qt_w.ctx.cfg
    f = fold_factor(layer)
    w = layer.weight.detach()
    w_eff = w * f if f is not None else w
    if cfg.weight_per_channel:
        absmax, axis = w_eff.abs().reshape(w_eff.shape[0], -1).amax(1), 0
    else:
        absmax, axis = w_eff.abs().max(), None
    scale, zp, qmin, qmax = symmetric_qparams(absmax, cfg.weight_bits, cfg.eps)
    err = fake_quantize(w_eff, scale, zp, qmin, qmax, axis) - w_eff
    if f is not None:
        err = torch.where(f != 0, err / torch.where(f != 0, f, torch.ones_like(f)), torch.zeros_like(err))
    return w + err


def _unfold_error(err: torch.Tensor, f: torch.Tensor | None) -> torch.Tensor:
    """An error on W·f mapped back to W per output channel (a dead channel, f = 0, gets none)."""
    if f is None:
        return err
    return torch.where(f != 0, err / torch.where(f != 0, f, torch.ones_like(f)), torch.zeros_like(err))


@torch.no_grad()
def saturate_weights_(model: nn.Module, lam: float = 1.0) -> int:
    """Move each weight (BN-folded where linked) in place by λ·(its clamp to the quantizer's grid range
    [q_min, q_max]·scale − itself), the saturation part of λ·(x̂ − x); returns how many weights moved.

    Why (issue 19): at λ = 1 the weight quantizer saturates at the observer's EMA quantile, which can lag below
    the reverse-pruning threshold τ, so the ~10 % of weights pinned at ±τ act in training as scale·q_min / scale·q_max. The
    FP32 export must carry that clamp (it is part of what was trained), not only drop the rounding noise.
    Layers whose observer never ran are left alone.
    """
    moved = 0
    for _, layer in weight_layers(model):
        if not layer.qt_w.observer.initialized:
            continue
        f = fold_factor(layer)
        w = layer.weight
        w_eff = w * f if f is not None else w
        scale, _, qmin, qmax = layer.qt_w.qparams()
        if scale.dim() and scale.numel() > 1:
            scale = scale.reshape(-1, *([1] * (w.dim() - 1)))
        # The grid is [q_min, q_max]·s with q_min = −q_max − 1: the fake quantizer saturates asymmetrically.
        err = torch.maximum(torch.minimum(w_eff, scale * qmax), scale * qmin) - w_eff
        moved += int((err != 0).sum())
        w.add_(lam * _unfold_error(err, f))
    return moved


def activation_clip_ranges(model: nn.Module) -> dict[str, tuple[float, float]]:
    """{point: (lo, hi)} of every initialised activation quantizer's grid ((q_min − zp)·s, (q_max − zp)·s),
    widened to the union over channels ("input" is the graph input).

    At λ = 1 each point saturates there; a network trained so may depend on it (issue 19: MobileNetV2's linear
    bottleneck outputs grow 3× without it), so the export reproduces it with a Clip.
    """
    out: dict[str, tuple[float, float]] = {}
    for point, q in act_quantizers(model).items():
        if not q.observer.initialized:
            continue
        scale, zp, qmin, qmax = q.qparams()
        out[point] = (float(((qmin - zp) * scale).min()), float(((qmax - zp) * scale).max()))
    return out
