"""Issue 19: the FP32 export of a Quant-Trim model computes what λ = 1 trained, minus only the rounding noise.

At λ = 1 every weight and activation quantizer also *saturates* (weights at ±scale·q_max, activations at the
grid's ends); a MobileNetV2 trained so depends on it (its exports scored chance without it). The reference
here is the wrapped model at λ = 1 with rounding switched off (each quantizer reduced to its clamp): the
stripped/exported model must agree with it to float tolerance, up to the logits' own clamp (the export leaves
the network output unclamped: ties at the range's end would pick the argmax), so the reference is the logits
as they enter their quantizer.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from harness.data.datasets import load_bundled_sample
from quanttrim import wrap
from quanttrim.config import QuantConfig
from quanttrim.export import export_onnx, plain_copy
from quanttrim.models import build_model
from quanttrim.pruning import reverse_prune_
from quanttrim.wrap import quantize_model


def _clamp_only(x, scale, zero_point, qmin, qmax, axis=None, *args, **kwargs):  # type: ignore[no-untyped-def]
    """The quantizer's saturation without its rounding (same signature as fake_quantize / fake_quant_blend)."""
    lo, hi = (qmin - zero_point) * scale, (qmax - zero_point) * scale
    if axis is not None and torch.is_tensor(lo) and lo.dim():
        shape = [1] * x.dim()
        shape[axis] = -1
        lo, hi = lo.reshape(shape), hi.reshape(shape)
    return torch.maximum(torch.minimum(x, hi), lo)


@pytest.fixture(scope="module")
def trained():
    """A width-0.25 MobileNetV2 after 6 Quant-Trim steps at λ = 1 (with one reverse-pruning pin) on the sample."""
    torch.manual_seed(0)
    train = load_bundled_sample("train").images
    model = build_model("mobilenetv2", num_classes=10, in_channels=1, image_size=28, width=0.25)
    ctx = quantize_model(model, QuantConfig(), torch.from_numpy(train[:2]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.from_numpy(load_bundled_sample("train").labels).long()
    model.train()
    for step in range(6):
        ctx.set_step(step * 4, 1.0, 0)  # every step observes
        if step == 3:
            reverse_prune_(model, 0.90)
        xb = torch.from_numpy(train[step * 32:(step + 1) * 32])
        loss = torch.nn.functional.cross_entropy(model(xb), labels[step * 32:(step + 1) * 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    ctx.lam = 1.0
    return model.eval(), load_bundled_sample("test").images[:32]


def _reference(model, images: np.ndarray, monkeypatch) -> np.ndarray:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(wrap, "fake_quantize", _clamp_only)
    monkeypatch.setattr(wrap, "fake_quant_blend", _clamp_only)
    ctx = model.__dict__["_qt_ctx"]
    ctx.capture = {}
    try:
        with torch.no_grad():
            model(torch.from_numpy(images))
        return ctx.capture["qlogits"].numpy()
    finally:
        ctx.capture = None


def test_stripped_model_is_the_trained_model_without_rounding(trained, monkeypatch) -> None:
    # Tolerance 1e-4 × max(1, |logits|): both sides compute the same clamped weights and activations; only the
    # order of float operations differs. Without the saturation the gap is of the order of the logits.
    model, images = trained
    with torch.no_grad():
        x = torch.from_numpy(images)
        got = plain_copy(model, snap_weights=False, example=x[:1])(x).numpy()
    ref = _reference(model, images, monkeypatch)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_exported_onnx_is_the_trained_model_without_rounding(trained, monkeypatch, tmp_path) -> None:
    # 1e-4 relative again: ONNX folds BN into the conv weights, which moves values by float rounding only.
    model, images = trained
    res = export_onnx(model, tmp_path / "mbv2.onnx", images, calibration=False)
    got = ort.InferenceSession(res.onnx_path, providers=["CPUExecutionProvider"]).run(["logits"], {"input": images})[0]
    ref = _reference(model, images, monkeypatch)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_a_model_trained_without_fake_quantization_is_exported_unclamped(trained) -> None:
    model, images = trained
    model.__dict__["_qt_ctx"].cfg = QuantConfig(enabled=False)  # as a MAP run: λ ≡ 0, observers only
    try:
        plain = plain_copy(model, snap_weights=False, example=torch.from_numpy(images[:1]))
    finally:
        model.__dict__["_qt_ctx"].cfg = QuantConfig()
    assert not plain.stem[0]._forward_hooks and torch.equal(plain.stem[0].weight, model.stem[0].weight)
    assert all(not m._forward_hooks for m in plain.modules())


def test_the_network_output_is_left_unclamped(trained) -> None:
    model, images = trained
    plain = plain_copy(model, snap_weights=False, example=torch.from_numpy(images[:1]))
    assert not plain.qlogits._forward_hooks and plain.qpool._forward_hooks


def test_saturation_needs_an_example_input(trained) -> None:
    model, _ = trained
    with pytest.raises(ValueError, match="example="):
        plain_copy(model, snap_weights=False)
