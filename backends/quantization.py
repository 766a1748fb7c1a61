"""Quantization numerics in numpy: the one home of symmetric weight quantization and bf16/fp16 rounding.

Used by the emulator's graph builders, the per-layer analysis and the tests; the trainer's torch
counterparts live in :mod:`quanttrim.quantizers` (same grid: scale = max|w| / (2^(b-1) − 1), round half to even).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), returned as float32.

    The bit trick: add 0x7FFF plus the lowest kept bit to the float32 pattern and drop the low 16
    bits. NaNs stay NaN (quiet), infinities stay infinite.
    """
    a = np.ascontiguousarray(x, dtype=np.float32)
    bits = a.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    out = (rounded & 0xFFFFFFFF).astype(np.uint32).view(np.float32).reshape(a.shape)
    return np.where(np.isnan(a), np.float32(np.nan), out)


def round_to_float(x: np.ndarray, kind: str) -> np.ndarray:
    """Round to fp16/bf16 and back to float32 ('fp32' returns the input)."""
    if kind == "bf16":
        return round_to_bf16(x)
    if kind == "fp16":
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)
    return np.asarray(x, dtype=np.float32)


def weight_axis(node: Any) -> int:
    """The output-channel axis of a weight tensor for per-channel quantization."""
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul":
        return 1
    return 0


def quantize_weight(w: np.ndarray, bits: int, axis: int | None, full_range: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric signed quantization on the b-bit grid: (integer values, float32 scale per channel or scalar).

    Restricted (default) matches ONNX Runtime's symmetric INT8 weight quantizer: scale = max|w| / (2^(b-1) − 1),
    round half to even, clip to ±(2^(b-1) − 1). ``full_range`` matches its QInt4 one (and the QNN HTP's INT4,
    −8 ≤ q ≤ 7): scale = 2·max|w| / (2^b − 1), clip to [−2^(b-1), 2^(b-1) − 1], so ±max|w| fall on a rounding tie
    (+max → 2^(b-1) − 1, −max → −2^(b-1)). An all-zero channel gets scale 1.
    """
    qmax = (1 << (bits - 1)) - 1
    qmin = -qmax - 1 if full_range else -qmax
    divisor = np.float32(qmax + 0.5 if full_range else qmax)
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        amax = np.array(np.abs(w).max() if w.size else 0.0, dtype=np.float32)
        scale = (amax / divisor).astype(np.float32)
        scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
        q = np.clip(np.rint(w / scale), qmin, qmax)
        return q, scale.reshape(())
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    amax = np.abs(moved).max(axis=1).astype(np.float32)
    scale = (amax / divisor).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), qmin, qmax)
    return q, scale


def fake_quantize_weight(w: np.ndarray, bits: int, axis: int | None, full_range: bool = False) -> np.ndarray:
    """Quantize then dequantize in float32 exactly as DequantizeLinear computes (q − 0) · scale."""
    q, scale = quantize_weight(w, bits, axis, full_range)
    if axis is None:
        return (q.astype(np.float32) * scale).astype(np.float32)
    shape = [1] * np.ndim(w)
    shape[axis] = -1
    return (q.astype(np.float32) * scale.reshape(shape)).astype(np.float32)
