"""Layer sensitivity: thesis Algorithm 1 (gradient under noise) and the weight-SNR alternative."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="sensitivity analysis needs torch (the `train` extra)")
nn = torch.nn

from quanttrim.mixed_precision.sensitivity import SensitivityConfig, default_pinned  # noqa: E402
from quanttrim.mixed_precision.sensitivity import gradient_sensitivity, quantizable_layers  # noqa: E402
from quanttrim.mixed_precision.sensitivity import snr_sensitivity  # noqa: E402


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 6 * 6, 5),
    )


def _data():
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(16, 1, 6, 6, generator=g), torch.randint(0, 5, (16,), generator=g))]


def _make_fragile(model: nn.Module, k: float = 100.0) -> None:
    """Shrink conv '2' by k and grow conv '4' by k: same function (ReLU is homogeneous), but the loss
    gradient w.r.t. conv 2's weights grows k-fold and small weight noise there matters far more."""
    with torch.no_grad():
        model[2].weight.div_(k)
        model[2].bias.div_(k)
        model[4].weight.mul_(k)


def test_reports_every_conv_and_linear_with_param_counts():
    res = gradient_sensitivity(_net(), _data(), config=SensitivityConfig(trials=2))
    assert [r.name for r in res] == ["0", "2", "4", "7"]
    assert [r.params for r in res] == [36, 144, 144, 720]
    assert all(r.sensitivity > 0 for r in res)


def test_fragile_layer_is_more_sensitive():
    cfg = SensitivityConfig(trials=4, noise_scale="relative_rms")
    base = {r.name: r.sensitivity for r in gradient_sensitivity(_net(), _data(), config=cfg)}
    fragile_model = _net()
    _make_fragile(fragile_model)
    fragile = {r.name: r.sensitivity for r in gradient_sensitivity(fragile_model, _data(), config=cfg)}
    assert fragile["2"] > 10 * base["2"]
    assert max(fragile, key=fragile.get) == "2"


def test_fragile_layer_is_more_sensitive_with_the_thesis_noise_scale():
    cfg = SensitivityConfig(trials=4)  # σ = ε/‖W‖ as written in the thesis
    fragile_model = _net()
    _make_fragile(fragile_model)
    fragile = {r.name: r.sensitivity for r in gradient_sensitivity(fragile_model, _data(), config=cfg)}
    assert max(fragile, key=fragile.get) == "2"


def test_model_is_left_unchanged():
    model = _net()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gradient_sensitivity(model, _data(), config=SensitivityConfig(trials=2, epsilon=1.0))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_reproducible_for_a_seed():
    a = gradient_sensitivity(_net(), _data(), config=SensitivityConfig(trials=2, seed=3))
    b = gradient_sensitivity(_net(), _data(), config=SensitivityConfig(trials=2, seed=3))
    assert [r.sensitivity for r in a] == [r.sensitivity for r in b]


def test_snr_flags_a_heavy_tailed_layer():
    model = _net()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # Laplace-distributed weights: a long tail stretches the grid for the bulk
        u = torch.rand(model[2].weight.shape, generator=g) - 0.5
        model[2].weight.copy_(-0.05 * torch.sign(u) * torch.log1p(-2 * u.abs()))
    res = {r.name: r for r in snr_sensitivity(model, bits=(2, 4, 8), per_channel=False)}
    assert max(res, key=lambda n: res[n].sensitivity / res[n].params) == "2"
    snr = res["0"].details["snr_db"]
    assert snr[2] < snr[4] < snr[8]


def test_unknown_layer_name_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: 0, 2, 4, 7"):
        gradient_sensitivity(_net(), _data(), layers=["nope"])


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="valid: inverse_norm, relative_rms"):
        SensitivityConfig(noise_scale="gaussian")


def test_default_pinned_is_first_conv_and_last_linear():
    res = gradient_sensitivity(_net(), _data(), config=SensitivityConfig(trials=1))
    assert default_pinned(res) == {"0": 8, "7": 8}


def test_model_without_layers_is_refused():
    with pytest.raises(ValueError, match="no Conv/Linear"):
        quantizable_layers(nn.Sequential(nn.ReLU()))
