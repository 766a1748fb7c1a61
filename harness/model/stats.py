"""Size and compute of a model: parameter count and MACs per inference (onnx-tool's profiler), file sizes.

These decide whether a model fits a board at all (a 4 GB Jetson Nano, an SRAM-only NPU), so every record carries
them beside its latency.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class ModelStats:
    """``params``: weights (count of initializer elements onnx-tool attributes to ops); ``macs_per_inference``:
    multiply-accumulates for one batch-1 inference at the given input shapes (None when profiling failed, with
    ``note`` saying why)."""

    params: int | None
    macs_per_inference: float | None
    note: str | None = None


def model_stats(path: Path | str, input_shapes: Mapping[str, tuple[int, ...]],
                input_dtypes: Mapping[str, str] | None = None) -> ModelStats:
    """Profile an ONNX model at batch-1 ``input_shapes`` ({input name: full shape}); never raises."""
    try:
        import onnx_tool
    except ImportError as exc:
        return ModelStats(None, None, f"onnx-tool is not installed ({exc}); pip install onnx-tool")
    dtypes = dict(input_dtypes or {})
    try:
        import onnx

        from backends.onnx_graph import constants_as_initializers

        proto = onnx.load(str(path))
        constants_as_initializers(proto)   # weights stored as Constant nodes are weights too
        model = onnx_tool.Model(proto)
        model.graph.shape_infer({name: np.zeros(shape, dtype=dtypes.get(name, "float32"))
                                 for name, shape in input_shapes.items()})
        model.graph.profile()
        macs = model.graph.macs
        macs = float(macs[0] if isinstance(macs, (list, tuple)) else macs)
        return ModelStats(int(model.graph.params), macs)
    except Exception as exc:  # a profiler gap on an exotic op must not fail a benchmark
        return ModelStats(None, None, f"onnx-tool could not profile the model: {type(exc).__name__}: {exc}"[:300])


def size_mb(path: Path | str) -> float:
    """Bytes on disk / 1e6 of a file, or of every file under a folder (compiled artifacts are often folders)."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e6
    return p.stat().st_size / 1e6
