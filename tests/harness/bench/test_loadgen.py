from __future__ import annotations

import numpy as np
import pytest

from harness.bench import loadgen
from tests.fakes.backends import SleepSession
from tests.fakes.clock import FakeClock


class ClockedSession:
    """Each run() takes the next latency of a known sequence on the fake clock."""

    def __init__(self, clock: FakeClock, latencies_ns: list[int]) -> None:
        self.clock, self.latencies_ns, self.calls = clock, latencies_ns, 0

    def run(self, feeds):
        self.clock.t += self.latencies_ns[self.calls % len(self.latencies_ns)]
        self.calls += 1
        return [np.zeros((len(feeds["x"]), 10), dtype=np.float32)]

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_loop_statistics_reflect_known_latency():
    clock = FakeClock()
    # warmup 2 (2 ms each), then per run 20 iterations: 1, 2, ..., 20 ms
    session = ClockedSession(clock, [2_000_000] * 2 + [i * 1_000_000 for i in range(1, 21)] * 3)
    cfg = loadgen.LoopConfig(warmup=2, iters=20, runs=3)
    result = loadgen.measure(session, {"x": np.zeros((4, 1, 2, 2), np.float32)}, cfg, clock=clock)
    summary = result.summary()
    assert result.samples_ns.shape == (3, 20)
    assert result.samples_ns[0].tolist() == [i * 1_000_000 for i in range(1, 21)]
    assert summary["latency_ms_p50"] == pytest.approx(10.5)
    assert summary["latency_ms_min"] == pytest.approx(1.0) and summary["latency_ms_max"] == pytest.approx(20.0)
    assert summary["latency_ms_mean"] == pytest.approx(10.5)
    assert summary["fps"] == pytest.approx(1000.0 / 10.5)


def test_loop_runs_warmup_plus_timed_iterations_and_syncs_each():
    session = SleepSession(0.0)
    loadgen.measure(session, {"x": np.zeros((4, 1, 2, 2), np.float32)}, loadgen.LoopConfig(warmup=3, iters=10, runs=2))
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

    loadgen.measure(SleepSession(0.0), {"x": np.zeros((2, 1, 2, 2), np.float32)}, loadgen.LoopConfig(1, 5, 2), power=Monitor())
    assert events == ["start", "stop", "start", "stop"]


def test_batches_cycle_through_images_and_are_prepared_contiguously():
    images = np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1)
    batches = loadgen.prepare_batches({"x": images}, batch=2, count=2)
    assert [b["x"].ravel().tolist() for b in batches] == [[0.0, 1.0], [2.0, 0.0]]
    assert all(b["x"].flags["C_CONTIGUOUS"] for b in batches)


def test_batches_carry_every_input_with_the_same_rows_and_dtype():
    inputs = {"image": np.arange(3, dtype=np.float32).reshape(3, 1), "ids": np.arange(10, 13, dtype=np.int64)}
    batches = loadgen.prepare_batches(inputs, batch=2, count=2)
    assert batches[1]["image"].ravel().tolist() == [2.0, 0.0]
    assert batches[1]["ids"].tolist() == [12, 10]
    assert batches[1]["ids"].dtype == np.int64


def test_inputs_with_different_sample_counts_are_refused():
    with pytest.raises(ValueError, match="different sample counts"):
        loadgen.prepare_batches({"a": np.zeros((3, 1)), "b": np.zeros((2, 1))}, batch=1, count=1)


def test_invalid_loop_config_is_refused():
    with pytest.raises(ValueError):
        loadgen.LoopConfig(iters=0)


def test_validation_pass_stops_at_its_time_budget():
    images = np.zeros((50, 1, 2, 2), np.float32)
    outputs = loadgen.run_outputs(SleepSession(0.01), {"x": images}, batch=1, time_budget_s=0.05)
    assert 1 <= len(outputs[0]) < 50


def test_validation_pass_without_budget_covers_every_image():
    images = np.zeros((7, 1, 2, 2), np.float32)
    assert len(loadgen.run_outputs(SleepSession(0.0), {"x": images}, batch=2)[0]) == 7


class _TwoOutputs:
    """Doubles its input as output 0 and returns a time-major (T=3, N, 2) copy as output 1."""

    def run(self, feeds):
        x = feeds["x"]
        return [x * 2, np.broadcast_to(x[None, :, :1], (3, len(x), 2)).copy()]

    def synchronize(self):
        pass


def test_validation_pass_returns_every_output_in_graph_order_joined_on_its_batch_axis():
    x = np.arange(5, dtype=np.float32).reshape(5, 1)
    first, second = loadgen.run_outputs(_TwoOutputs(), {"x": x}, batch=2, batch_axes=[0, 1])
    assert first.ravel().tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert second.shape == (3, 5, 2)  # time-major stays time-major: joined on its batch axis 1
    assert second[0, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
