"""Every zoo model builds for any channels/size, trains one fake-quantized step, and ViT/U-Net export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from quanttrim.config import QuantConfig
from quanttrim.data import make_mosaics
from quanttrim.export import export_onnx
from quanttrim.models import build_model, model_names
from quanttrim.wrap import act_quantizers, quantize_model

CASES = [("resnet20", 1, 20), ("resnet18", 3, 16), ("resnet50", 2, 16), ("mobilenetv2", 3, 24),
         ("mobilenetv3_small", 1, 16), ("vit_small", 3, 16), ("unet_small", 1, 16)]


def test_every_registered_model_is_covered() -> None:
    assert sorted(model_names()) == sorted(c[0] for c in CASES)


@pytest.mark.parametrize("name, ch, size", CASES)
def test_wrapped_step_at_full_blend(name: str, ch: int, size: int) -> None:
    task = "segmentation" if name == "unet_small" else "classification"
    m = build_model(name, num_classes=3, in_channels=ch, image_size=size, width=0.25, task=task)
    ctx = quantize_model(m, QuantConfig(), torch.rand(2, ch, size, size))
    m.train()
    ctx.set_step(0, 1.0, 0)
    out = m(torch.rand(2, ch, size, size))
    out.float().mean().backward()
    assert out.shape == ((2, 3, size, size) if task == "segmentation" else (2, 3))
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_vit_attention_points() -> None:
    m = build_model("vit_small", num_classes=3, in_channels=1, image_size=16, width=0.25)
    quantize_model(m, QuantConfig(), torch.rand(2, 1, 16, 16))
    pts = act_quantizers(m)
    for p in ("blocks.0.attn.qq", "blocks.0.attn.qk", "blocks.0.attn.qv", "blocks.0.attn.qo", "blocks.0.act"):
        assert p in pts
    assert not any("softmax" in p or "scores" in p for p in pts)  # scores stay FP


@pytest.mark.parametrize("name, task", [("vit_small", "classification"), ("unet_small", "segmentation")])
def test_export_maps_every_point(name: str, task: str, tmp_path) -> None:
    m = build_model(name, num_classes=3, in_channels=1, image_size=16, width=0.25, task=task)
    ctx = quantize_model(m, QuantConfig(), torch.rand(2, 1, 16, 16))
    m.train()
    ctx.set_step(0, 0.0, 0)
    m(torch.rand(4, 1, 16, 16))
    res = export_onnx(m, tmp_path / f"{name}.onnx", np.random.default_rng(0).random((4, 1, 16, 16), dtype=np.float32))
    assert res.tensors_mapped >= len(act_quantizers(m)) - 1  # points on one tensor share an entry


def test_mosaic_masks() -> None:
    imgs = np.zeros((3, 1, 4, 4), np.float32)
    imgs[:, :, 1:3, 1:3] = 1.0
    x, y = make_mosaics(imgs, np.array([0, 4, 9]), n=2, seed=0)
    assert x.shape == (2, 1, 8, 8) and y.shape == (2, 8, 8)
    assert set(np.unique(y)) <= {0, 1, 5, 10} and (y[:, 0, 0] == 0).all()
