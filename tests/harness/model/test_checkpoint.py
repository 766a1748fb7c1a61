"""The one model object: inputs minus initializers, every output, every file hashed, shapes fixed from data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backends.base import UnsupportedRequest, file_sha256
from harness.model.checkpoint import Checkpoint, CheckpointError, check_feedable, load_checkpoint
from tests.harness.model import onnx_models as m


def test_weights_listed_as_graph_inputs_are_not_model_inputs(tmp_path):
    ckpt = load_checkpoint(m.weights_listed_as_inputs(tmp_path / "old.onnx"))
    assert ckpt.input_names == ("input",)  # graph.input[0] is the weight "w"


def test_every_input_and_output_in_graph_order_with_symbols_kept(tmp_path):
    ckpt = load_checkpoint(m.two_inputs_two_outputs(tmp_path / "two.onnx"))
    assert [(t.name, t.shape) for t in ckpt.inputs] == [("image", ("N", 1, 4, 4)), ("scale", ("N", 1))]
    assert ckpt.output_names == ("aux", "logits")
    assert ckpt.opset == 17


def test_single_file_identity_is_the_files_sha256(tmp_path):
    path = m.dynamic_hw_classifier(tmp_path / "dyn.onnx")
    ckpt = load_checkpoint(path)
    assert ckpt.sha256 == file_sha256(path)
    assert ckpt.files == (("dyn.onnx", file_sha256(path)),)


def test_external_data_file_is_part_of_the_identity(tmp_path):
    path = m.with_external_data(tmp_path / "ext.onnx", weight=1.0)
    before = load_checkpoint(path)
    assert [f for f, _ in before.files] == ["ext.onnx", "ext.data"]
    data = tmp_path / "ext.data"  # new weights in place: the .onnx file is byte-identical
    data.write_bytes(np.full(16 * 4, 2.0, np.float32).tobytes())
    after = load_checkpoint(path)
    assert after.files[0] == before.files[0]
    assert after.sha256 != before.sha256


def test_missing_external_data_file_is_refused_naming_it(tmp_path):
    path = m.with_external_data(tmp_path / "ext.onnx")
    (tmp_path / "ext.data").unlink()
    with pytest.raises(CheckpointError, match="ext.data which is missing"):
        load_checkpoint(path)


def test_json_round_trip_keeps_everything(tmp_path):
    ckpt = load_checkpoint(m.two_inputs_two_outputs(tmp_path / "two.onnx")).with_data_shapes(
        {"image": (1, 4, 4), "scale": (1,)})
    again = Checkpoint.from_dict(json.loads(json.dumps(ckpt.to_dict())))
    assert again == ckpt


def test_symbolic_height_width_fixed_from_the_data_reach_the_backend(tmp_path):
    ckpt = load_checkpoint(m.dynamic_hw_classifier(tmp_path / "dyn.onnx")).with_data_shapes({"input": (2, 5, 7)})
    art = ckpt.artifact()
    assert art.static_input_shapes(1) == {"input": (1, 2, 5, 7)}
    assert ckpt.input_shape == (2, 5, 7)


def test_unfixed_symbolic_dimension_is_refused_never_zero(tmp_path):
    art = load_checkpoint(m.dynamic_hw_classifier(tmp_path / "dyn.onnx")).artifact()
    with pytest.raises(UnsupportedRequest, match=r"unknown dimensions \[-1, 2, -1, -1\]"):
        art.static_input_shapes(1)


def test_data_disagreeing_with_a_fixed_dimension_is_refused(tmp_path):
    ckpt = load_checkpoint(m.dynamic_hw_classifier(tmp_path / "dyn.onnx"))
    with pytest.raises(CheckpointError, match=r"expects input input of shape \[2, 'H', 'W'\].*\[3, 5, 7\]"):
        ckpt.with_data_shapes({"input": (3, 5, 7)})


def test_fixed_batch_is_read_from_the_graph(tmp_path):
    assert load_checkpoint(m.dynamic_hw_classifier(tmp_path / "b4.onnx", batch=4)).fixed_batch == 4
    assert load_checkpoint(m.dynamic_hw_classifier(tmp_path / "bn.onnx")).fixed_batch is None


def test_demo_data_refuses_a_two_input_model_naming_its_inputs(tmp_path):
    ckpt = load_checkpoint(m.two_inputs_two_outputs(tmp_path / "two.onnx"))
    with pytest.raises(CheckpointError, match=r"2 inputs \(image, scale\)"):
        check_feedable(ckpt, (1, 28, 28), "Fashion-MNIST")


def test_demo_data_that_does_not_fit_the_model_points_to_the_data_flag(tmp_path):
    ckpt = load_checkpoint(m.dynamic_hw_classifier(tmp_path / "dyn.onnx"))   # takes 2 channels
    with pytest.raises(CheckpointError, match=r"\(evaluation data: Fashion-MNIST\); to feed your own: --data DIR"):
        check_feedable(ckpt, (1, 28, 28), "Fashion-MNIST")


def test_tflite_checkpoint_lists_its_inputs_and_outputs_from_the_interpreter(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="reading .tflite checkpoints needs ai-edge-litert")
    from tests.harness.model import tflite_models

    ckpt = load_checkpoint(tflite_models.two_inputs_two_outputs(tmp_path / "m.tflite"))
    assert ckpt.format == "tflite" and ckpt.opset is None
    assert [(t.name, t.shape, t.dtype) for t in ckpt.inputs] == [("a", (-1, 3), "float32"), ("b", (-1, 3), "float32")]
    assert ckpt.output_names == ("prod", "sum")
    assert ckpt.sha256 == file_sha256(tmp_path / "m.tflite")


def test_unreadable_tflite_is_refused_saying_so(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="reading .tflite checkpoints needs ai-edge-litert")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(CheckpointError, match="not a readable .tflite model"):
        load_checkpoint(bad)


def test_new_weights_in_the_data_file_are_never_served_an_old_compiled_artifact(tmp_path):
    from backends.base import CompileConfig
    from backends.onnxruntime_backend import OnnxRuntimeBackend
    from devices import load_device

    path = m.with_external_data(tmp_path / "ext.onnx", weight=1.0)
    backend, device, work = OnnxRuntimeBackend(), load_device("cpu"), tmp_path / "work"
    first = backend.compile(load_checkpoint(path).artifact(), device, CompileConfig("fp16"), None, work)
    (tmp_path / "ext.data").write_bytes(np.full(16 * 4, 2.0, np.float32).tobytes())
    again = backend.compile(load_checkpoint(path).artifact(), device, CompileConfig("fp16"), None, work)
    assert first.metadata["cached"] is False and again.metadata["cached"] is False
    assert again.path != first.path
