"""ONNX graph facts and fixes adapters share: opset upgrades before quantization, weight dtypes, tensor types.

Graphs users really have are often old exports (opset 9-12). Two features the adapters use need opset 13:
per-axis ``QuantizeLinear``/``DequantizeLinear`` (per-channel INT8) and ``Cast`` to ``bfloat16`` (the emulator's
bf16 rounding). :func:`upgrade_opset` converts such a graph with ONNX's own version converter before building,
and the adapter records the conversion; when the converter cannot, the request is refused with the fix, never
left to crash at load time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: The first default-domain opset with per-axis Q/DQ and bfloat16 Cast.
PER_AXIS_QDQ_OPSET = 13
BF16_CAST_OPSET = 13

_FLOAT_NAMES = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}


def default_opset(model: Any) -> int | None:
    """The default-domain ("" or "ai.onnx") opset a ModelProto imports, or None when it imports none."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def upgrade_opset(src: Path | str, dst: Path | str, minimum: int, why: str) -> tuple[Path, dict[str, Any]]:
    """``src`` itself when its opset is at least ``minimum``; else a copy converted to ``minimum`` at ``dst``.

    Returns (path to build from, facts for the record: ``opset_converted`` "11 -> 13" and why). Raises
    UnsupportedRequest naming the fix when ONNX's version converter fails on the graph. ``why`` says which
    feature needs the opset (e.g. "per-channel INT8 (per-axis DequantizeLinear)").
    """
    import onnx
    from onnx import version_converter

    from backends.base import UnsupportedRequest

    model = onnx.load(str(src))
    have = default_opset(model)
    if have is None or have >= minimum:
        return Path(src), {}
    try:
        converted = version_converter.convert_version(model, minimum)
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises RuntimeError/ValidationError with its own text
        raise UnsupportedRequest(
            f"{why} needs ONNX opset >= {minimum}; the model is opset {have} and onnx's version converter failed "
            f"on it ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); fix: re-export the model with "
            f"opset {minimum} or newer") from None
    onnx.save(converted, str(dst))
    return Path(dst), {"opset_converted": f"{have} -> {minimum}",
                       "opset_converted_why": f"{why} needs opset >= {minimum} (onnx.version_converter)"}


def float_weight_dtype(model: Any) -> str:
    """The floating-point type of a ModelProto's float initializers: "fp32", "fp16", "bf16", "mixed" or "none"."""
    kinds = {_FLOAT_NAMES[i.data_type] for i in model.graph.initializer if i.data_type in _FLOAT_NAMES}
    if not kinds:
        return "none"
    return kinds.pop() if len(kinds) == 1 else "mixed"
