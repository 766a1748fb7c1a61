"""Per-layer weight bits on a model wrapped by the trainer (mixed-precision QAT)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="QAT needs torch (the `train` extra)")
nn = torch.nn

from quanttrim.config import QuantConfig  # noqa: E402
from quanttrim.mixed_precision.qat import apply_weight_bits, weight_bits_of  # noqa: E402
from quanttrim.wrap import context, quantize_model, weight_layers  # noqa: E402


def _wrapped(act_bits: int = 8) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    quantize_model(model, QuantConfig(act_bits=act_bits, fold_bn=False, fast_kernels=False), torch.rand(2, 1, 6, 6))
    ctx = context(model)
    model.train()
    ctx.set_step(0, 1.0, 0)  # one observing step initialises the ranges
    model(torch.rand(8, 1, 6, 6))
    return model


def test_each_layer_quantizes_to_its_own_bits():
    model = _wrapped()
    eff = apply_weight_bits(model, {"0": 2})
    assert eff == {"0": 2, "3": 8} == weight_bits_of(model)
    conv = dict(weight_layers(model))["0"]
    w = conv.weight.detach()
    q = w + conv.qt_w.error(w, None)
    scale = conv.qt_w.qparams()[0]
    assert torch.unique(torch.round(q / scale)).numel() <= 3  # 2-bit symmetric grid {-1, 0, 1}


def test_shared_schedule_still_drives_every_layer():
    model = _wrapped()
    apply_weight_bits(model, {"0": 4})
    ctx = context(model)
    ctx.lam = 0.0
    conv = dict(weight_layers(model))["0"]
    assert conv.qt_w.ctx.lam == 0.0  # λ is read live from the shared context
    w = conv.weight
    assert torch.equal(conv.qt_w(w, None), w)  # λ = 0: no quantization, as for every other layer
    ctx.lam = 1.0
    assert not torch.equal(conv.qt_w(w, None), w)


def test_activation_bits_come_from_the_config():
    model = _wrapped(act_bits=4)
    apply_weight_bits(model, {"0": 2})
    assert context(model).cfg.act_bits == 4


def test_unknown_layer_or_bits_refused():
    model = _wrapped()
    with pytest.raises(ValueError, match="valid: 0, 3"):
        apply_weight_bits(model, {"fc": 4})
    with pytest.raises(ValueError, match="valid: 2, 3, 4, 5, 6, 7, 8"):
        apply_weight_bits(model, {"0": 1})
