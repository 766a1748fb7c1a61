"""Small ONNX graph facts and rewrites that several adapters share (static batch, operator counts, coverage).

Vendor NPU compilers want static shapes and report which operators they place on the accelerator and which
fall back to the CPU; ``op_coverage`` turns those counts into the record fields every NPU adapter writes
(``ops_on_npu``, ``ops_on_cpu``, ``fallback_ops``, ``npu_op_share``), so the fidelity report reads one vocabulary.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


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
