from __future__ import annotations

import numpy as np
import pytest

from harness.bench import loadgen
from tests.fakes.backends import SleepSession


def test_loop_statistics_reflect_known_latency():
    session = SleepSession(0.002)
    cfg = loadgen.LoopConfig(warmup=2, iters=20, runs=3)
    result = loadgen.measure(session, np.zeros((4, 1, 2, 2), np.float32), cfg)
    summary = result.summary()
    assert result.samples_ns.shape == (3, 20)
    assert 2.0 <= summary["latency_ms_p50"] < 3.0
    assert summary["latency_ms_min"] >= 2.0
    assert summary["fps"] == pytest.approx(1000.0 / summary["latency_ms_p50"])


def test_loop_runs_warmup_plus_timed_iterations_and_syncs_each():
    session = SleepSession(0.0)
    loadgen.measure(session, np.zeros((4, 1, 2, 2), np.float32), loadgen.LoopConfig(warmup=3, iters=10, runs=2))
    assert session.calls == 3 + 20
    assert session.syncs >= 20


def test_summary_is_median_over_runs_of_each_runs_statistic():
    samples = np.array([[1_000_000] * 10, [3_000_000] * 10, [2_000_000] * 10], dtype=np.int64)
    summary = loadgen.LoopResult(samples, batch=1).summary()
    assert summary["latency_ms_p50"] == pytest.approx(2.0)
    assert summary["latency_ms_p50_runs"] == (1.0, 3.0, 2.0)


def test_power_monitor_window_is_started_and_stopped_around_each_run():
    events = []

    class Monitor:
        def start(self):
            events.append("start")

        def stop(self):
            events.append("stop")

    loadgen.measure(SleepSession(0.0), np.zeros((2, 1, 2, 2), np.float32), loadgen.LoopConfig(1, 5, 2), power=Monitor())
    assert events == ["start", "stop", "start", "stop"]


def test_batches_cycle_through_images_and_are_prepared_contiguously():
    images = np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1)
    batches = loadgen.prepare_batches(images, batch=2, count=2)
    assert [b.ravel().tolist() for b in batches] == [[0.0, 1.0], [2.0, 0.0]]
    assert all(b.flags["C_CONTIGUOUS"] for b in batches)


def test_invalid_loop_config_is_refused():
    with pytest.raises(ValueError):
        loadgen.LoopConfig(iters=0)


def test_validation_pass_stops_at_its_time_budget():
    images = np.zeros((50, 1, 2, 2), np.float32)
    outputs = loadgen.run_outputs(SleepSession(0.01), images, batch=1, time_budget_s=0.05)
    assert 1 <= len(outputs) < 50


def test_validation_pass_without_budget_covers_every_image():
    images = np.zeros((7, 1, 2, 2), np.float32)
    assert len(loadgen.run_outputs(SleepSession(0.0), images, batch=2)) == 7
