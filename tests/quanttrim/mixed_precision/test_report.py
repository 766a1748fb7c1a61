"""Reporting: actual ONNX bytes, Σ P·b sizes, compression ratios, table and plot outputs."""
from __future__ import annotations

import numpy as np
import pytest

from quanttrim.mixed_precision.report import ResultRow, compression_ratio, markdown_table, mixed_size_bytes
from quanttrim.mixed_precision.report import onnx_initializer_bytes, plot_tradeoff, terminal_table, write_csv


def _onnx_with(tmp_path, dtype):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((10, 20), dtype=dtype), "w")
    b = numpy_helper.from_array(np.zeros((10,), dtype=np.float32), "b")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 20])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y], [w, b])
    path = tmp_path / f"m-{np.dtype(dtype).name}.onnx"
    onnx.save(helper.make_model(g), str(path))
    return path


def test_initializer_bytes_follow_the_stored_dtype(tmp_path):
    assert onnx_initializer_bytes(_onnx_with(tmp_path, np.float32)) == 200 * 4 + 40
    assert onnx_initializer_bytes(_onnx_with(tmp_path, np.int8)) == 200 + 40


def test_mixed_size_and_ratio():
    size = mixed_size_bytes({"a": 8, "b": 2}, {"a": 100, "b": 400})
    assert size == 200
    assert compression_ratio(4 * 500, size) == 10


def test_mixed_size_needs_params():
    with pytest.raises(ValueError, match="no parameter count for layers: b"):
        mixed_size_bytes({"a": 8, "b": 2}, {"a": 100})


def _rows():
    return [
        ResultRow("resnet20", "FP32", "32", "32", 91.0, 0.0, 1e6, "onnx_initializers", 1.0, 1.0, "onnxruntime", 0.5, 1.0),
        ResultRow("resnet20", "PTQ-max", "8", "8", 90.0, 1.0, 2.6e5, "onnx_initializers", 3.85, 4.0, "onnxruntime", 0.3, 1.6),
        ResultRow("resnet20", "2MP-A6", "2MP", "6", 88.5, 2.5, 1.6e5, "weights_sum_P_b", 6.4, 6.4,
                  "torch fake-quant emulation", None, None, "onnxruntime refuses w2a6"),
    ]


def test_tables_and_csv(tmp_path):
    md = markdown_table(_rows())
    assert md.count("\n") == 5 and "| resnet20 | 2MP-A6 | 2MP | 6 | 88.50 | 2.50 |" in md
    assert "PTQ-max" in terminal_table(_rows())
    text = write_csv(_rows(), tmp_path / "t.csv").read_text()
    assert text.splitlines()[0].startswith("model,method,weight_bits") and "refuses w2a6" in text


def test_bad_size_basis_refused():
    with pytest.raises(ValueError, match="valid: onnx_initializers, weights_sum_P_b"):
        ResultRow("m", "x", "8", "8", 1.0, 0.0, 1.0, "disk", 1.0, 1.0, "onnxruntime")


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    path = plot_tradeoff(_rows(), tmp_path / "fig.png")
    assert path.stat().st_size > 1000


def test_allocation_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    from quanttrim.mixed_precision.report import plot_allocation

    path = plot_allocation("t", ["a", "b"], [1.0, 5.0], {"4MP": {"a": 4, "b": 8}, "2MP": {"a": 2, "b": 8}},
                           tmp_path / "alloc.png")
    assert path.stat().st_size > 1000
