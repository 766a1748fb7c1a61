"""Reverse pruning pins weights at τ: max|w| ≤ τ and about 1 − p_clip of them clipped."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from quanttrim.config import QuantConfig
from quanttrim.pruning import clipped_fraction, fold_factor, reverse_prune_
from quanttrim.wrap import quantize_model


@pytest.mark.parametrize("p_clip", [0.90, 0.95, 0.99])
def test_pin_bounds_weights_and_clips_expected_fraction(p_clip: float) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 32, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 4, 10))
    taus = reverse_prune_(model, p_clip)
    assert set(taus) == {"0", "3"}
    for name, layer in (("0", model[0]), ("3", model[3])):
        assert layer.weight.abs().max().item() <= taus[name].item() + 1e-7
    assert clipped_fraction(model) == pytest.approx(1 - p_clip, abs=0.01)


def test_per_channel_thresholds() -> None:
    conv = nn.Conv2d(4, 6, 3)
    with torch.no_grad():
        conv.weight.mul_(torch.arange(1, 7, dtype=torch.float32).view(6, 1, 1, 1))
    taus = reverse_prune_(conv, 0.9, per_channel=True)[""]
    assert taus.shape == (6,)
    assert torch.all(conv.weight.abs().amax(dim=(1, 2, 3)) <= taus + 1e-7)
    assert taus[5] > taus[0]  # channel scales differ, so do thresholds


def test_ema_threshold_state() -> None:
    lin = nn.Linear(100, 100)
    t1 = reverse_prune_(lin, 0.9)[""].item()
    with torch.no_grad():
        lin.weight.mul_(2.0)
    t_hat = lin.weight.abs().flatten().kthvalue(9000).values.item()
    t2 = reverse_prune_(lin, 0.9, beta=0.5)[""].item()
    assert t2 == pytest.approx(0.5 * t1 + 0.5 * t_hat, rel=1e-5)


def test_bn_folded_domain() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    with torch.no_grad():
        model[1].weight.copy_(torch.linspace(0.2, 3.0, 8))
        model[1].running_var.copy_(torch.linspace(0.5, 2.0, 8))
    quantize_model(model, QuantConfig(), torch.rand(2, 3, 8, 8))
    tau = reverse_prune_(model, 0.9, fold_bn=True)["0"]
    folded = model[0].weight * fold_factor(model[0])
    assert folded.abs().max().item() <= tau.item() * (1 + 1e-6)
    assert clipped_fraction(model) == pytest.approx(0.1, abs=0.02)


def test_invalid_p_clip() -> None:
    with pytest.raises(ValueError, match="p_clip"):
        reverse_prune_(nn.Linear(2, 2), 1.5)
