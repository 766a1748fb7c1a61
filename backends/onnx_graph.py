"""Small ONNX graph facts and rewrites that several adapters share (static batch, operator counts, coverage,
opset upgrades before quantization, weight dtypes).

Vendor NPU compilers want static shapes and report which operators they place on the accelerator and which
fall back to the CPU; ``op_coverage`` turns those counts into the record fields every NPU adapter writes
(``ops_on_npu``, ``ops_on_cpu``, ``fallback_ops``, ``npu_op_share``), so the fidelity report reads one vocabulary.

Graphs users really have are often old exports (opset 9-12). Two features the adapters use need opset 13:
per-axis ``QuantizeLinear``/``DequantizeLinear`` (per-channel INT8) and ``Cast`` to ``bfloat16`` (the emulator's
bf16 rounding). :func:`upgrade_opset` converts such a graph with ONNX's own version converter before building,
and the adapter records the conversion; when the converter cannot, the request is refused with the fix, never
left to crash at load time.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


def constants_as_initializers(model: Any) -> int:
    """Move the top-level graph's tensor-valued ``Constant`` nodes into initializers of the same name, in place;
    returns how many moved. Some exporters (PaddlePaddle's paddle2onnx) store every weight as a Constant node,
    and tools that look for weights among the initializers (ORT's dynamic quantizer: "Expected ... to be an
    initializer"; parameter counts; weight statistics) then find none. The graph computes the same values."""
    import onnx

    if model.ir_version < 4:   # initializers must also be graph inputs before IR 4: leave such graphs alone
        return 0
    kept, moved = [], 0
    for node in model.graph.node:
        value = [a for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR]
        if node.op_type == "Constant" and not node.domain and len(node.attribute) == 1 and value:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value[0].t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
            moved += 1
        else:
            kept.append(node)
    if moved:
        del model.graph.node[:]
        model.graph.node.extend(kept)
    return moved


def static_shape_copy(src: Path | str, dst: Path | str, shapes: Mapping[str, Sequence[int]] | None = None,
                      batch: int = 1) -> Path:
    """Write ``src`` with static shapes: inputs named in ``shapes`` get those shapes, every other graph input's
    and output's symbolic leading (batch) dimension becomes ``batch``.

    Raises:
        ValueError: ``batch`` < 1.
    """
    import onnx

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    shapes = dict(shapes or {})
    m = onnx.load(str(src))
    for value in list(m.graph.input) + list(m.graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.name in shapes:
            for d, size in zip(dims, shapes[value.name]):
                d.dim_value = int(size)
        elif dims and not dims[0].dim_value:
            dims[0].dim_value = batch
    onnx.save(m, str(dst))
    return Path(dst)


def op_type_counts(model_path: Path | str) -> dict[str, int]:
    """How many nodes of each operator type the graph has (top-level graph only), sorted by type."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return dict(sorted(Counter(n.op_type for n in graph.node).items()))


def op_coverage(on_npu: Mapping[str, int] | Iterable[str], on_cpu: Mapping[str, int] | Iterable[str]
                ) -> dict[str, Any]:
    """Record fields for operator placement: counts per op type on the NPU and on the CPU fallback.

    Args:
        on_npu: op type -> node count (or an iterable of op types, one per node) placed on the accelerator.
        on_cpu: the same for nodes that fell back to the host CPU.
    Returns:
        {"ops_on_npu": {...}, "ops_on_cpu": {...}, "fallback_ops": [op types on the CPU, sorted],
        "npu_op_share": fraction of nodes on the NPU in [0, 1], or None when no node was counted}.
    """
    npu = _counts(on_npu)
    cpu = _counts(on_cpu)
    total = sum(npu.values()) + sum(cpu.values())
    return {"ops_on_npu": npu, "ops_on_cpu": cpu, "fallback_ops": sorted(cpu),
            "npu_op_share": (sum(npu.values()) / total) if total else None}


def _counts(ops: Mapping[str, int] | Iterable[str]) -> dict[str, int]:
    counter = Counter(dict(ops)) if isinstance(ops, Mapping) else Counter(ops)
    return {k: int(v) for k, v in sorted(counter.items()) if v}


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
