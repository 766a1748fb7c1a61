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


def test_constant_node_weights_become_initializers_computing_the_same(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from backends.onnx_graph import constants_as_initializers

    path = tiny_cnn(tmp_path / "c.onnx", weights_as_constants=True).path
    model = onnx.load(str(path))
    assert constants_as_initializers(model) == 6
    assert not [n for n in model.graph.node if n.op_type == "Constant"]
    assert sorted(i.name for i in model.graph.initializer) == ["B1", "B2", "Bf", "W1", "W2", "Wf"]
    onnx.save(model, str(tmp_path / "i.onnx"))
    x = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    before, after = (ort.InferenceSession(str(p)).run(None, {"input": x})[0] for p in (path, tmp_path / "i.onnx"))
    np.testing.assert_array_equal(before, after)
