"""The model card: inference from the graph, the TOML file beside the model, validation messages."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harness.model.card import CardError, ModelCard, effective_card, infer_card, load_card
from tests.conftest import make_tiny_cnn


class _Model:
    """The two attributes of a Checkpoint that the card reads."""

    def __init__(self, path: Path) -> None:
        self.path, self.format = path, "onnx"


def _graph(path: Path, outputs: list[tuple[str, list, str]], in_shape: list, softmax_axis: int = 1) -> Path:
    """Input "x"; each output is Identity / Softmax / Relu / Sigmoid of x (op given), shapes as declared."""
    nodes, outs = [], []
    for name, shape, op in outputs:
        attrs = {"axis": softmax_axis} if op == "Softmax" else {}
        nodes.append(helper.make_node(op, ["x"], [name], **attrs))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)], outs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_inferred_card_reads_static_size_layout_and_logits(tmp_path):
    card = infer_card(_Model(make_tiny_cnn(tmp_path / "m.onnx", channels=3, size=32)))
    (inp,), (out,) = card.inputs, card.outputs
    assert (inp.layout, inp.size, inp.colour, inp.scale) == ("NCHW", (32, 32), "rgb", 1 / 255)
    assert out.role == "logits"
    assert len(card.inferred) == 2


def test_final_softmax_is_probabilities_over_its_axis(tmp_path):
    card = infer_card(_Model(_graph(tmp_path / "s.onnx", [("p", ["N", 5], "Softmax")], ["N", 5])))
    assert (card.outputs[0].role, card.outputs[0].class_axis) == ("probabilities", 1)


def test_rows_summing_to_one_in_the_reference_are_probabilities(tmp_path):
    model = _Model(_graph(tmp_path / "r.onnx", [("p", ["N", 3], "Identity")], ["N", 3]))
    ref = np.full((2, 3), 1 / 3, dtype=np.float32)
    assert infer_card(model, [ref]).outputs[0].role == "probabilities"


def test_per_position_rows_summing_to_one_are_a_sequence(tmp_path):
    model = _Model(_graph(tmp_path / "r.onnx", [("p", ["N", 4, 3], "Identity")], ["N", 4, 3]))
    ref = np.full((2, 4, 3), 1 / 3, dtype=np.float32)
    assert infer_card(model).outputs[0].role == "raw"
    assert (infer_card(model, [ref]).outputs[0].role, infer_card(model, [ref]).outputs[0].class_axis) == \
        ("sequence", -1)


def test_a_softmax_per_position_is_a_sequence_over_its_axis(tmp_path):
    # A text recognizer's (N, T, K) Softmax output (PaddleOCR's rec model): one distribution per position.
    card = infer_card(_Model(_graph(tmp_path / "t.onnx", [("p", ["N", 40, 6625], "Softmax")], ["N", 40, 6625],
                                    softmax_axis=2)))
    assert (card.outputs[0].role, card.outputs[0].class_axis) == ("sequence", 2)


def test_a_softmax_behind_a_transpose_keeps_its_class_axis(tmp_path):
    # Softmax over the classes of (N, K, T), transposed to (N, T, K): the classes are on axis 2 of the output.
    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=1),
             helper.make_node("Transpose", ["s"], ["p"], perm=[0, 2, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 37, 25])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 25, 37])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "t.onnx"))
    card = infer_card(_Model(tmp_path / "t.onnx"))
    assert (card.outputs[0].role, card.outputs[0].class_axis) == ("sequence", 2)


def test_a_softmax_over_channels_of_a_map_is_a_mask(tmp_path):
    card = infer_card(_Model(_graph(tmp_path / "m.onnx", [("p", ["N", 3, 8, 8], "Softmax")], ["N", 3, 8, 8])))
    assert (card.outputs[0].role, card.outputs[0].class_axis) == ("mask", 1)


def test_a_singleton_softmax_axis_is_still_one_vector_per_image(tmp_path):
    card = infer_card(_Model(_graph(tmp_path / "v.onnx", [("p", ["N", 1, 5], "Softmax")], ["N", 1, 5],
                                    softmax_axis=2)))
    assert card.outputs[0].role == "probabilities"


def test_a_one_channel_sigmoid_map_of_an_nchw_model_is_a_binary_mask_on_axis_1(tmp_path):
    # A text detector's probability map (PaddleOCR det: [N, 1, H, W] behind a Sigmoid).
    card = infer_card(_Model(_graph(tmp_path / "d.onnx", [("y", ["N", 1, "H", "W"], "Sigmoid")], ["N", 3, "H", "W"])))
    assert (card.outputs[0].role, card.outputs[0].class_axis) == ("mask", 1)


def test_a_raw_4d_output_of_an_nchw_model_has_its_channels_on_axis_1(tmp_path):
    card = infer_card(_Model(_graph(tmp_path / "f.onnx", [("y", ["N", 3, 16, 16], "Relu")], ["N", 3, 16, 16])))
    assert (card.outputs[0].role, card.outputs[0].class_axis) == ("raw", 1)


def test_dynamic_height_width_leave_size_open(tmp_path):
    card = infer_card(_Model(_graph(tmp_path / "d.onnx", [("y", ["N", 1, "H", "W"], "Relu")], ["N", 3, "H", "W"])))
    assert card.inputs[0].size is None
    assert card.outputs[0].role == "raw"


def test_card_beside_the_model_is_picked_up_and_overrides(tmp_path):
    path = _graph(tmp_path / "det.onnx", [("boxes", ["N", 10, 4], "Relu"), ("scores", ["N", 10], "Relu")],
                  ["N", 10, 4])
    (tmp_path / "det.card.toml").write_text(
        '[[outputs]]\nname = "boxes"\nrole = "detection"\nbox_format = "xyxy"\n')
    card = effective_card(_Model(path))
    assert card.output("boxes").role == "detection" and card.output("boxes").box_format == "xyxy"
    assert card.output("scores").role == "logits"        # not in the file: inferred
    assert card.source.endswith("det.card.toml")
    assert not any(n.startswith("output boxes") for n in card.inferred)


def test_invalid_role_names_file_field_and_choices(tmp_path):
    path = _graph(tmp_path / "m.onnx", [("y", ["N", 3], "Relu")], ["N", 3])
    bad = tmp_path / "bad.toml"
    bad.write_text('[[outputs]]\nname = "y"\nrole = "boxes"\n')
    with pytest.raises(CardError, match=r"bad\.toml \[\[outputs\]\] #1: role = 'boxes' is not valid; choose one "
                                        r"of logits, probabilities, detection"):
        effective_card(_Model(path), bad)


def test_unknown_detection_layout_lists_the_layouts_scoring_reads(tmp_path):
    path = _graph(tmp_path / "m.onnx", [("y", ["N", 3], "Relu")], ["N", 3])
    bad = tmp_path / "bad.toml"
    bad.write_text('[[outputs]]\nname = "y"\nrole = "detection"\ndetection_layout = "yolo"\n')
    with pytest.raises(CardError, match=r"detection_layout = 'yolo' is not valid; choose one of boxes4\+scoresK, "
                                        r"boxes4\+obj\+scoresK, boxes4\+score\+class"):
        effective_card(_Model(path), bad)


def test_card_entry_for_a_missing_tensor_lists_the_graph_tensors(tmp_path):
    path = _graph(tmp_path / "m.onnx", [("y", ["N", 3], "Relu")], ["N", 3])
    bad = tmp_path / "c.toml"
    bad.write_text('[[outputs]]\nname = "logits"\nrole = "logits"\n')
    with pytest.raises(CardError, match="the model has no output 'logits'; its outputs: y"):
        effective_card(_Model(path), bad)


def test_unknown_key_lists_valid_keys(tmp_path):
    bad = tmp_path / "k.toml"
    bad.write_text('[[inputs]]\nname = "x"\nmean_rgb = [1, 2, 3]\n')
    with pytest.raises(CardError,
                       match="unknown key\\(s\\) mean_rgb; did you mean 'mean'\\? valid keys: name, layout, size"):
        load_card(bad)


def test_card_round_trips_through_a_dict(tmp_path):
    card = effective_card(_Model(make_tiny_cnn(tmp_path / "m.onnx")))
    again = ModelCard.from_dict(card.to_dict())
    assert again == card


def test_effective_card_written_as_toml_reads_back_the_same(tmp_path):
    model = _Model(_graph(tmp_path / "m.onnx", [("p", ["N", 5], "Softmax")], ["N", 3, 8, 8]))
    card = effective_card(model)
    (tmp_path / "again.toml").write_text(card.to_toml())
    again = effective_card(model, tmp_path / "again.toml")
    assert again.inputs == card.inputs and again.outputs == card.outputs and again.inferred == ()


def test_a_tflite_model_ending_in_softmax_is_probabilities(tmp_path):
    # The same classifier as ONNX was "probabilities"; as .tflite it was "logits" and got a second softmax.
    pytest.importorskip("ai_edge_litert", reason="reading .tflite checkpoints needs ai-edge-litert")
    from harness.model.checkpoint import load_checkpoint
    from tests.harness.model import tflite_models

    card = infer_card(load_checkpoint(tflite_models.softmax_classifier(tmp_path / "p.tflite")))
    assert (card.outputs[0].role, card.outputs[0].class_axis) == ("probabilities", -1)
