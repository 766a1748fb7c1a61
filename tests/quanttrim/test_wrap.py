"""Model wrapping: identity at λ = 0, deployed grid at λ = 1 (BN-folded), clean strip, STE gradients."""
from __future__ import annotations

import torch
from torch import nn

from quanttrim.config import QuantConfig
from quanttrim.models import build_model
from quanttrim.pruning import fold_factor
from quanttrim.quantizers import symmetric_qparams
from quanttrim.wrap import act_quantizers, quantize_model, snapped_weight, strip_quantization, weight_layers


def tiny() -> nn.Module:
    return build_model("resnet20", num_classes=10, in_channels=1, image_size=16, width=0.25)


def _observe(model: nn.Module, ctx, x: torch.Tensor, lam: float) -> None:
    model.train()
    ctx.set_step(0, lam, 0)  # step 0 is an observer step
    model(x)


def test_lambda_zero_is_the_fp32_model() -> None:
    torch.manual_seed(0)
    plain = tiny()
    wrapped = tiny()
    wrapped.load_state_dict(plain.state_dict())
    ctx = quantize_model(wrapped, QuantConfig(), torch.rand(2, 1, 16, 16))
    x = torch.rand(8, 1, 16, 16)
    _observe(wrapped, ctx, x, 0.0)
    plain.train()
    plain(x)  # same BN running-stat update
    wrapped.eval(), plain.eval()
    torch.testing.assert_close(wrapped(x), plain(x), rtol=0, atol=0)


def test_quant_points_cover_activations_adds_and_input() -> None:
    m = tiny()
    quantize_model(m, QuantConfig(), torch.rand(2, 1, 16, 16))
    pts = act_quantizers(m)
    assert "input" in pts and "normalize" in pts
    assert any(p.endswith(".add") for p in pts) and any(p.endswith("relu1") for p in pts)
    assert "qlogits" in pts and "qpool" in pts
    convs = dict(weight_layers(m))
    assert "_qt_bn" in convs["layer1.0.conv1"].__dict__  # Conv→BN pair found by tracing
    assert "_qt_bn" not in convs["fc"].__dict__


def test_bn_folded_weight_lands_on_grid_at_full_blend() -> None:
    m = tiny()
    ctx = quantize_model(m, QuantConfig(fast_kernels=False), torch.rand(2, 1, 16, 16))
    _observe(m, ctx, torch.rand(8, 1, 16, 16), 1.0)
    conv = m.layer1[0].conv1
    f = fold_factor(conv)
    w_tilde = conv.qt_w(conv.weight, f)  # λ = 1: the weight the forward pass uses
    scale, *_ = symmetric_qparams(conv.qt_w.observer.hi, 8)
    q = (w_tilde * f) / scale
    assert torch.allclose(q, q.round(), atol=1e-3)


def test_weight_gradient_is_straight_through() -> None:
    m = tiny()
    ctx = quantize_model(m, QuantConfig(), torch.rand(2, 1, 16, 16))
    x = torch.rand(4, 1, 16, 16)
    _observe(m, ctx, x, 1.0)
    conv = m.layer1[0].conv1
    w = conv.weight.detach().clone().requires_grad_(True)
    out = conv.qt_w(w, fold_factor(conv))
    g = torch.randn_like(out)
    out.backward(g)
    assert torch.equal(w.grad, g)


def test_strip_restores_plain_model() -> None:
    m = tiny()
    keys = set(m.state_dict())
    quantize_model(m, QuantConfig(), torch.rand(2, 1, 16, 16))
    assert any("qt_" in k for k in m.state_dict())
    strip_quantization(m)
    assert set(m.state_dict()) == keys
    assert type(m.layer1[0].conv1) is nn.Conv2d
    assert not m.layer1[0].relu1._forward_hooks


def test_snapped_weight_max_sits_on_qmax() -> None:
    m = tiny()
    ctx = quantize_model(m, QuantConfig(), torch.rand(2, 1, 16, 16))
    _observe(m, ctx, torch.rand(8, 1, 16, 16), 1.0)
    conv = m.layer2[0].conv2
    w = snapped_weight(conv) * fold_factor(conv)
    scale = w.abs().max() / 127
    q = w / scale
    assert torch.allclose(q, q.round(), atol=1e-3)
