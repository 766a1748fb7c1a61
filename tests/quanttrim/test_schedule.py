"""λ_t at the corners of the §3.3 curriculum."""
from __future__ import annotations

import pytest

from quanttrim.schedule import blend_factor

EW, EF, H = 10.0, 50.0, 20.0


def test_zero_during_warmup() -> None:
    assert blend_factor(0.0, EW, EF, H) == 0.0
    assert blend_factor(9.999, EW, EF, H) == 0.0


def test_quartic_ramp() -> None:
    assert blend_factor(EW, EW, EF, H) == 0.0
    assert blend_factor(30.0, EW, EF, H) == pytest.approx(0.5 * 0.5 ** 4)
    assert blend_factor(EF - 1e-9, EW, EF, H) == pytest.approx(0.5)


def test_quadratic_to_full() -> None:
    assert blend_factor(EF, EW, EF, H) == 0.5
    assert blend_factor(EF + H / 2, EW, EF, H) == pytest.approx(0.5 + 0.5 * 0.25)
    assert blend_factor(EF + H, EW, EF, H) == 1.0
    assert blend_factor(1000.0, EW, EF, H) == 1.0


def test_cap_and_degenerate_schedules() -> None:
    assert blend_factor(1000.0, EW, EF, H, cap=0.8) == 0.8
    assert blend_factor(0.3, 0.0, 0.0, 0.0) == 1.0  # no warmup, no ramp, no horizon: full at once
    assert blend_factor(0.25, 0.1, 0.4, 0.2) == pytest.approx(0.5 * 0.5 ** 4)  # fractional epochs


def test_monotone_non_decreasing() -> None:
    vals = [blend_factor(t / 10, EW, EF, H) for t in range(0, 1000)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        blend_factor(1.0, 5.0, 2.0, 1.0)
    with pytest.raises(ValueError):
        blend_factor(1.0, 0.0, 1.0, 1.0, cap=1.5)
