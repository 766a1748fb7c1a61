"""Export: ORT matches PyTorch, opset 17 single file, calib table names exist in the graph."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from harness.data.datasets import load_bundled_sample
from quanttrim.config import QuantConfig
from quanttrim.export import CALIB_FORMAT, export_onnx
from quanttrim.models import build_model
from quanttrim.wrap import quantize_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    images = load_bundled_sample("test").images[:16]
    model = build_model("resnet20", num_classes=10, in_channels=1, image_size=28, width=0.25)
    ctx = quantize_model(model, QuantConfig(), torch.from_numpy(images[:2]))
    model.train()
    for step in range(3):  # a few steps so observers and BN statistics are non-trivial
        ctx.set_step(step * 4, 1.0, 0)
        model(torch.from_numpy(load_bundled_sample("train").images[step * 32:(step + 1) * 32]))
    model.eval()
    path = tmp_path_factory.mktemp("exp") / "tiny.onnx"
    res = export_onnx(model, path, images, snap_weights=True)
    return model, path, res, images


def test_ort_matches_torch_round_trip(exported) -> None:
    model, path, res, images = exported
    from quanttrim.export import plain_copy

    x = torch.from_numpy(images)
    ref = plain_copy(model, snap_weights=True, example=x[:1])(x).detach().numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5, 16):  # dynamic batch axis
        got = sess.run(["logits"], {"input": images[:n]})[0]
        np.testing.assert_allclose(got, ref[:n], rtol=1e-4, atol=1e-4)
    assert res.max_abs_diff < 1e-4


def test_graph_contract(exported) -> None:
    _, path, _, _ = exported
    m = onnx.load(str(path))
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["logits"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    ops = {n.op_type for n in m.graph.node}
    assert "BatchNormalization" not in ops and {"Sub", "Mul"} <= ops  # BN folded, normalisation inside
    assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)
    assert not list(path.parent.glob("*.data"))


def test_calib_table_names_exist_in_graph(exported) -> None:
    _, path, res, _ = exported
    table = json.loads(path.with_name("tiny.calib.json").read_text())
    assert table["format"] == CALIB_FORMAT and table["activation_bits"] == 8
    m = onnx.load(str(path))
    names = {"input"} | {o for n in m.graph.node for o in n.output}
    assert table["tensors"] and set(table["tensors"]) <= names
    for name, rng in table["tensors"].items():
        assert rng["min"] <= 0.0 <= rng["max"]
        assert rng["max"] > rng["min"]
    # the network output gets no learned range (a p_hi range clips the logits): backends calibrate it from data
    assert "logits" not in table["tensors"] and any("Relu" in n or "Clip" in n for n in table["tensors"])
    assert res.tensors_mapped == len(table["tensors"])


def test_calib_ranges_fit_the_tensors(exported) -> None:
    """The tensor each name points at really has the range learned for it (order of magnitude)."""
    _, path, _, images = exported
    table = json.loads(path.with_name("tiny.calib.json").read_text())["tensors"]
    m = onnx.load(str(path))
    for name in table:
        if name not in ("input", "logits"):
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    vals = dict(zip(outs, sess.run(outs, {"input": images})))
    for name, v in vals.items():
        if name in table:
            hi = table[name]["max"]
            assert 0.2 * hi <= float(v.max()) <= 5 * hi + 1e-6, name


def test_qdq_graph_uses_learned_ranges(exported, tmp_path) -> None:
    from onnx import numpy_helper

    from quanttrim.qdq import export_qdq

    _, path, _, images = exported
    table = json.loads(path.with_name("tiny.calib.json").read_text())["tensors"]
    dst = export_qdq(path, path.with_name("tiny.calib.json"), load_bundled_sample("train").images[:32], tmp_path / "q.onnx")
    m = onnx.load(str(dst))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    relu = next(n for n in table if n.endswith(("Relu_output_0", "Clip_output_0")))
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == relu)
    scale = float(inits[q.input[1]])
    assert scale == pytest.approx((table[relu]["max"] - table[relu]["min"]) / 255, rel=1e-5)
    out = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(["logits"], {"input": images})[0]
    assert out.shape == (len(images), 10)


def _weights(path) -> dict[str, np.ndarray]:
    """Every weight initializer (conv and Gemm: two or more dimensions) of an exported graph."""
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer if len(i.dims) >= 2}


def test_unsnapped_export_keeps_the_trained_weights_bit_exactly(exported, tmp_path) -> None:
    model, snapped_path, _, images = exported
    res = export_onnx(model, tmp_path / "raw.onnx", images, snap_weights=False, calibration=False)
    fc = model.fc.weight.detach().numpy()  # the classifier has no BN: its ONNX weight is the trained tensor itself
    raw = [w for w in _weights(res.onnx_path).values() if w.shape == fc.shape]
    snapped = [w for w in _weights(snapped_path).values() if w.shape == fc.shape]
    assert len(raw) == 1 and np.array_equal(raw[0], fc) and not res.weights_snapped
    assert not np.array_equal(snapped[0], fc)  # so the check above can tell the two exports apart


def test_snapped_export_puts_every_weight_on_its_per_tensor_grid(exported) -> None:
    _, path, res, _ = exported
    weights = _weights(path)
    assert res.weights_snapped and len(weights) > 10
    for name, w in weights.items():
        q = w / (np.abs(w).max() / 127.0)  # symmetric max calibration: the grid a per-tensor backend recomputes
        np.testing.assert_allclose(q, np.round(q), atol=1e-3, err_msg=name)


def test_auto_exports_the_trained_weights_of_a_quanttrim_model() -> None:
    from quanttrim.export import resolve_snap

    assert resolve_snap("auto", quant_enabled=True) is False
    assert resolve_snap("yes", quant_enabled=True) is True


def test_a_model_trained_without_fake_quantization_is_never_snapped() -> None:
    from quanttrim.export import resolve_snap

    assert resolve_snap("yes", quant_enabled=False) is False


def test_an_unknown_snap_choice_says_the_valid_ones() -> None:
    from quanttrim.export import resolve_snap

    with pytest.raises(ValueError, match="auto, yes, no"):
        resolve_snap("per_tensor", quant_enabled=True)
