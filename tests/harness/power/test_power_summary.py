"""The arithmetic from sampled windows to record fields."""
from __future__ import annotations

import numpy as np
import pytest

from harness.power.base import Reading
from harness.power.summary import Window, empty_fields, integrate_trapezoid, summarize_windows
from harness.store.records import POWER_FIELDS

KW = dict(source="fake", has_counter=False, has_power=True, counter_resolution_s=None, period_ms=10.0)


def _window(t0, powers, dt=0.01):
    samples = [Reading(t0 + i * dt, p) for i, p in enumerate(powers)]
    return Window(t_start=t0, t_stop=samples[-1].t_s, samples=samples)


def test_trapezoid_holds_values_outside_the_samples():
    pts = [(1.0, 2.0), (2.0, 4.0)]
    # [0, 1] held at 2, [1, 2] ramps 2 -> 4, [2, 3] held at 4
    assert integrate_trapezoid(pts, 0.0, 3.0) == pytest.approx(2 + 3 + 4)


def test_peak_mean_is_the_mean_of_per_run_peaks_and_percentiles_are_pooled():
    runs = [_window(0.0, [1, 2, 3, 10]), _window(1.0, [2, 2, 4, 6]), _window(2.0, [1, 5, 5, 5])]
    out = summarize_windows(runs, None, [10, 10, 10], [0.03] * 3, **KW)
    pooled = [1, 2, 3, 10, 2, 2, 4, 6, 1, 5, 5, 5]
    assert out["power_peak_w_mean"] == pytest.approx((10 + 6 + 5) / 3)
    assert out["power_peak_w"] == 10
    assert out["power_p5_w"] == pytest.approx(np.percentile(pooled, 5))
    assert out["power_p95_w"] == pytest.approx(np.percentile(pooled, 95))
    assert out["power_samples"] == 12


def test_net_energy_subtracts_idle_power_over_the_run_time():
    idle = _window(-1.0, [2.0] * 11, dt=0.1)
    run = _window(0.0, [5.0] * 11, dt=0.1)  # 1 s at 5 W
    out = summarize_windows([run], idle, [100], [1.0], **KW)
    assert out["power_idle_w"] == pytest.approx(2.0)
    assert out["energy_per_inference_mj"] == pytest.approx(50.0)
    assert out["energy_per_inference_net_mj"] == pytest.approx(30.0)


def test_low_fidelity_when_the_period_exceeds_one_inference():
    run = _window(0.0, [5.0] * 11, dt=0.1)
    assert summarize_windows([run], None, [1000], [1.0], **KW)["power_low_fidelity"] is True
    assert summarize_windows([run], None, [5], [1.0], **KW)["power_low_fidelity"] is False


def test_partial_run_energy_uses_average_power_times_time_per_inference():
    run = _window(0.0, [4.0] * 6, dt=0.1)
    run.t_stop, run.failure = None, "gone"
    out = summarize_windows([run], None, [100], [1.0], **KW, note="gone")
    assert out["power_avg_w"] == pytest.approx(4.0)
    assert out["energy_per_inference_mj"] == pytest.approx(40.0)
    assert out["power_unavailable_reason"] == "gone"


def test_empty_fields_cover_every_record_power_field_and_are_none():
    out = empty_fields("no source")
    assert set(out) == set(POWER_FIELDS)
    assert all(out[k] is None for k in POWER_FIELDS if k not in ("power_unavailable_reason", "power_estimated"))
    assert out["power_estimated"] is False
