"""Uniform fake quantizers (paper §3.1.1) with the deployed rounding: round half to even, as ONNX
QuantizeLinear does, so the grid the network trains on is the grid a backend deploys.

Small composable parts (Brevitas style): integer ranges per bit width and signedness, range->(scale,
zero point) conversion for symmetric weights and asymmetric activations, the exact fake quantizer, a
fused fast path for training, and the straight-through blend x̃ = x + λ·stopgrad(x̂ − x).
"""
from __future__ import annotations

import warnings

import torch

_QDTYPES = {(0, 255): torch.quint8, (-128, 127): torch.qint8}

__all__ = [
    "qrange",
    "fake_quantize",
    "fake_quantize_fast",
    "symmetric_qparams",
    "asymmetric_qparams",
    "blend",
    "fake_quant_blend",
]


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """(q_min, q_max) for a ``bits``-wide integer: (−2^(b−1), 2^(b−1)−1) signed, (0, 2^b−1) unsigned."""
    if not 2 <= int(bits) <= 16:
        raise ValueError(f"bit width must be in [2, 16], got {bits}")
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def _broadcast(t: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None:
        if t.numel() != 1:
            raise ValueError(f"per-tensor quantization needs a scalar scale/zero point, got shape {tuple(t.shape)}")
        return t.reshape(())
    axis = axis % x.dim()
    if t.dim() != 1 or t.numel() != x.shape[axis]:
        raise ValueError(
            f"per-channel scale/zero point must be 1-D with {x.shape[axis]} entries (axis {axis}), "
            f"got shape {tuple(t.shape)}"
        )
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | float | int,
    qmin: int,
    qmax: int,
    axis: int | None = None,
) -> torch.Tensor:
    """QuantizeLinear followed by DequantizeLinear, bit-for-bit like ONNX.

    q = clip(round_half_even(x / s) + z, qmin, qmax); x̂ = (q − z)·s. Per-tensor when ``axis`` is None,
    else ``scale``/``zero_point`` are 1-D along ``axis``. Uses true division (not multiplication by 1/s)
    because that is what the ONNX spec and ONNX Runtime compute; it decides exact .5 ties.
    """
    s = _broadcast(torch.as_tensor(scale, dtype=x.dtype, device=x.device), x, axis)
    z = _broadcast(torch.as_tensor(zero_point, dtype=x.dtype, device=x.device), x, axis)
    q = torch.clamp(torch.round(x / s) + z, qmin, qmax)  # torch.round rounds half to even
    return (q - z) * s


def fake_quantize_fast(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    axis: int | None = None,
) -> torch.Tensor:
    """Fast fake quantizer for training (no gradient; used inside the blend).

    For the 8-bit ranges it quantizes to a real quint8/qint8 tensor and back (FBGEMM's vectorised kernels,
    ~6x faster on CPU than ``torch.fake_quantize_per_tensor_affine``, identical values); other bit widths use
    the fused fake-quant kernel. Both multiply by 1/s, so they can differ from :func:`fake_quantize` only for
    x/s within one float ulp of a .5 tie; the export never uses this path.
    """
    zp = zero_point.round().to(torch.int64)
    dtype = _QDTYPES.get((qmin, qmax))
    if dtype is not None and x.dtype == torch.float32 and x.device.type == "cpu":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # quantized dtypes are deprecated upstream; torch is pinned here
                if axis is None:
                    q = torch.quantize_per_tensor(x, float(scale), int(zp), dtype)
                else:
                    q = torch.quantize_per_channel(x, scale.double(), zp, axis % x.dim(), dtype)
                return q.dequantize()
        except (RuntimeError, AttributeError):
            pass
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()).float(), zp.reshape(()).to(torch.int32), qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, scale.float(), zp.to(torch.int32), axis % x.dim(), qmin, qmax)


def symmetric_qparams(absmax: torch.Tensor, bits: int, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Scale/zero point for signed symmetric weights: s = max(m, ε)/(2^(b−1)−1), z = 0."""
    qmin, qmax = qrange(bits, signed=True)
    scale = torch.clamp(absmax, min=eps) / qmax
    return scale, torch.zeros_like(scale), qmin, qmax


def asymmetric_qparams(
    lo: torch.Tensor, hi: torch.Tensor, bits: int, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Scale/zero point for unsigned asymmetric activations.

    The range is first widened to contain 0 (as every deployment toolchain does, so that zero padding
    and ReLU zeros are exact), then s = max(hi − lo, ε)/(2^b − 1) and z = clip(round(−lo/s), qmin, qmax):
    the zero point is an integer because a deployed one is.
    """
    qmin, qmax = qrange(bits, signed=False)
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    scale = torch.clamp(hi - lo, min=eps) / (qmax - qmin)
    zero = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax)
    return scale, zero, qmin, qmax


def blend(x: torch.Tensor, x_hat: torch.Tensor, lam: float) -> torch.Tensor:
    """x̃ = x + λ·stopgrad(x̂ − x): forward moves λ of the way to the grid, gradient is exactly dL/dx̃ (STE)."""
    if lam == 0.0:
        return x
    return x + lam * (x_hat - x).detach()


class _FakeQuantBlend(torch.autograd.Function):
    """Fused x̃ = lerp(x, x̂, λ) with an identity backward: 2 passes over the tensor instead of 5."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, lam, axis, exact):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            if exact:
                xq = fake_quantize(x, scale, zero_point, qmin, qmax, axis)
            else:
                xq = fake_quantize_fast(x, scale, zero_point, qmin, qmax, axis)
            return xq if lam == 1.0 else torch.lerp(x, xq, lam)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        return grad, None, None, None, None, None, None, None


def fake_quant_blend(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    lam: float,
    axis: int | None = None,
    exact: bool = False,
) -> torch.Tensor:
    """x + λ·stopgrad(fake_quantize(x) − x) in one autograd node: forward blends, gradient passes unchanged (STE)."""
    if lam == 0.0:
        return x
    return _FakeQuantBlend.apply(x, scale, zero_point, qmin, qmax, float(lam), axis, exact)
