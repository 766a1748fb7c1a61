"""Shared ONNX graph helpers: static batch, operator counts and the operator-coverage record fields."""
from __future__ import annotations

import onnx

from backends.onnx_graph import op_coverage, op_type_counts, static_shape_copy
from tests.backends.tiny_onnx import tiny_cnn


def test_static_shape_copy_fixes_the_symbolic_batch(tmp_path):
    model = tiny_cnn(tmp_path / "m.onnx")
    out = static_shape_copy(model.path, tmp_path / "b1.onnx")
    graph = onnx.load(str(out)).graph
    assert [v.type.tensor_type.shape.dim[0].dim_value for v in (*graph.input, *graph.output)] == [1, 1]


def test_op_type_counts_counts_nodes_per_type(tmp_path):
    assert op_type_counts(tiny_cnn(tmp_path / "m.onnx").path) == {
        "Conv": 2, "Flatten": 1, "Gemm": 1, "GlobalAveragePool": 1, "Relu": 2}


def test_coverage_share_counts_nodes_on_both_sides():
    cov = op_coverage({"Conv": 3}, ["Softmax"])
    assert cov["npu_op_share"] == 0.75 and cov["fallback_ops"] == ["Softmax"]


def test_coverage_of_nothing_has_no_share():
    assert op_coverage({}, {})["npu_op_share"] is None
