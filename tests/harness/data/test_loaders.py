"""The user's data as model inputs: folders of images, .npz/.npy arrays, the calibration split, the job file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from harness.data.loaders import DataError, load_data, load_job_data, save_job_data, split_calibration
from harness.model.card import InputCard, ModelCard, OutputCard, infer_card


class _Model:
    def __init__(self, path: Path) -> None:
        self.path, self.format = path, "onnx"


def _model(tmp_path: Path, inputs: dict[str, list], name: str = "m.onnx") -> _Model:
    """Each input passes through an Identity to an output ``<input>_out``."""
    nodes = [helper.make_node("Identity", [n], [n + "_out"]) for n in inputs]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n + "_out", TensorProto.FLOAT, s) for n, s in inputs.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / name))
    return _Model(tmp_path / name)


def _card(size=(4, 6), layout="NCHW", colour="rgb", **kw) -> ModelCard:
    return ModelCard((InputCard("x", layout=layout, size=size, colour=colour, **kw),), (OutputCard("x_out"),))


def _png(path: Path, rgb=(10, 20, 30), size=(6, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def test_class_subfolders_give_labels_and_card_preprocessing(tmp_path):
    for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        _png(tmp_path / "d" / cls / "a.png", colour)
        _png(tmp_path / "d" / cls / "deep" / "b.jpg", colour)
    model = _model(tmp_path, {"x": ["N", 3, 4, 6]})
    ds = load_data(tmp_path / "d", model, _card(mean=(0.5,), std=(0.5,)))
    assert ds.inputs["x"].shape == (4, 3, 4, 6) and ds.inputs["x"].dtype == np.float32
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.class_names == ("cat", "dog")
    np.testing.assert_allclose(ds.inputs["x"][0, :, 0, 0], [1.0, -1.0, -1.0])   # (255/255 - .5) / .5


def test_bgr_nhwc_and_integer_folder_names(tmp_path):
    _png(tmp_path / "d" / "0" / "a.png", (255, 0, 0))
    _png(tmp_path / "d" / "180" / "b.png", (255, 0, 0))
    model = _model(tmp_path, {"x": ["N", 4, 6, 3]})
    ds = load_data(tmp_path / "d", model, _card(layout="NHWC", colour="bgr"))
    assert ds.inputs["x"].shape == (2, 4, 6, 3)
    np.testing.assert_allclose(ds.inputs["x"][0, 0, 0], [0.0, 0.0, 1.0])
    assert ds.labels.tolist() == [0, 180]


def test_folder_without_subfolders_has_no_labels(tmp_path):
    _png(tmp_path / "d" / "a.png")
    ds = load_data(tmp_path / "d", _model(tmp_path, {"x": ["N", 3, 4, 6]}), _card())
    assert ds.labels is None
    assert any("no labels" in n for n in ds.notes)


def test_loose_images_beside_class_folders_are_refused(tmp_path):
    _png(tmp_path / "d" / "a.png")
    _png(tmp_path / "d" / "cat" / "b.png")
    with pytest.raises(DataError, match="also 1 image\\(s\\) directly in it \\(e.g. a.png\\)"):
        load_data(tmp_path / "d", _model(tmp_path, {"x": ["N", 3, 4, 6]}), _card())


def test_dynamic_size_takes_the_most_common_image_size_and_says_so(tmp_path):
    for i, size in enumerate([(8, 4), (8, 4), (16, 4)]):
        _png(tmp_path / "d" / f"{i}.png", size=size)
    model = _model(tmp_path, {"x": ["N", 3, "H", "W"]})
    ds = load_data(tmp_path / "d", model, infer_card(model))
    assert ds.inputs["x"].shape == (3, 3, 4, 8)
    assert any("2 sizes" in n and "4x8" in n for n in ds.notes)


def test_letterbox_keeps_aspect_and_pads_with_zero(tmp_path):
    _png(tmp_path / "d" / "a.png", (255, 255, 255), size=(8, 2))      # 8 wide, 2 high -> 4x1 inside 4x4
    ds = load_data(tmp_path / "d", _model(tmp_path, {"x": ["N", 1, 4, 4]}),
                   _card(size=(4, 4), colour="gray", resize="letterbox"))
    assert ds.inputs["x"][0, 0].tolist() == [[0.0] * 4, [1.0] * 4, [0.0] * 4, [0.0] * 4]   # 1 row, centred


def test_npz_with_one_array_per_input_feeds_a_multi_input_model(tmp_path):
    model = _model(tmp_path, {"a": ["N", 3], "b": ["N", 2]})
    np.savez(tmp_path / "d.npz", a=np.ones((5, 3), np.float64), b=np.zeros((5, 2)), labels=np.arange(5))
    ds = load_data(tmp_path / "d.npz", model, infer_card(model))
    assert set(ds.inputs) == {"a", "b"} and ds.inputs["a"].dtype == np.float32
    assert ds.labels.tolist() == [0, 1, 2, 3, 4]


def test_npz_uint8_images_go_through_the_card(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.full((2, 8, 12, 3), 255, np.uint8))
    ds = load_data(tmp_path / "d.npz", _model(tmp_path, {"x": ["N", 3, 4, 6]}), _card())
    assert ds.inputs["x"].shape == (2, 3, 4, 6) and float(ds.inputs["x"].max()) == 1.0
    assert ds.labels is None


def test_npy_of_the_wrong_shape_names_both_shapes(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((2, 3, 5, 5), np.float32))
    with pytest.raises(DataError, match=r"has shape \[2, 3, 5, 5\] but the model takes \['N', 3, 4, 6\]"):
        load_data(tmp_path / "d.npy", _model(tmp_path, {"x": ["N", 3, 4, 6]}), _card())


def test_an_input_array_with_nan_is_refused_as_data_not_blamed_on_the_model(tmp_path):
    x = np.zeros((2, 3, 4, 6), np.float32)
    x[1, 0, 0, 0] = np.nan
    np.save(tmp_path / "d.npy", x)
    with pytest.raises(DataError, match=r"input x holds 1 NaN and 0 Inf of 144 values"):
        load_data(tmp_path / "d.npy", _model(tmp_path, {"x": ["N", 3, 4, 6]}), _card())


def test_a_float_array_for_an_image_input_says_the_card_was_not_applied(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((2, 3, 4, 6), np.float32))
    ds = load_data(tmp_path / "d.npy", _model(tmp_path, {"x": ["N", 3, 4, 6]}), _card())
    assert any("fed as it is" in n and "apply to images and uint8 pixels only" in n for n in ds.notes)


def test_npz_with_unknown_names_lists_what_was_expected(tmp_path):
    np.savez(tmp_path / "d.npz", pixels=np.zeros((2, 3)))
    with pytest.raises(DataError, match="expected one per model input \\(x\\) or one named `images`"):
        load_data(tmp_path / "d.npz", _model(tmp_path, {"x": ["N", 3]}), _card())


def test_calibration_split_is_seeded_disjoint_and_recorded(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32))
    model = _model(tmp_path, {"x": ["N", 3]})
    ds = load_data(tmp_path / "d.npz", model, infer_card(model))
    ev, cal = split_calibration(ds, 256, seed=3)
    ev2, cal2 = split_calibration(ds, 256, seed=3)
    assert (len(ev), len(cal)) == (5, 5)
    assert set(ev.inputs["x"][:, 0]).isdisjoint(cal.inputs["x"][:, 0])
    np.testing.assert_array_equal(cal.inputs["x"], cal2.inputs["x"])
    assert "5 of 10 samples" in cal.notes[-1] and "seed 3" in cal.notes[-1] and "capped" in cal.notes[-1]


def test_job_data_round_trips(tmp_path):
    model = _model(tmp_path, {"a": ["N", 3], "b/c": ["N", 2]})
    np.savez(tmp_path / "d.npz", **{"a": np.ones((4, 3)), "b/c": np.zeros((4, 2))})
    ds = load_data(tmp_path / "d.npz", model, infer_card(model))
    ev, cal = split_calibration(ds, 2, seed=0)
    ev2, cal2 = load_job_data(save_job_data(tmp_path / "job.npz", ev, cal))
    assert list(ev2.inputs) == ["a", "b/c"] and ev2.notes == ev.notes and ev2.labels is None
    np.testing.assert_array_equal(cal2.inputs["b/c"], cal.inputs["b/c"])
    assert load_job_data(save_job_data(tmp_path / "j2.npz", ev, None))[1] is None
