"""The offline scenario's bookkeeping: the batch ladder, samples/s per point, where the sweep stops and why, the
runtime's queued streams, and the record fields (a fake session on a fake clock: no wall time is asserted)."""
from __future__ import annotations

import numpy as np
import pytest

from harness.bench import offline
from harness.store.records import JobRecord
from tests.fakes.clock import FakeClock

MS = 1_000_000  # ns


class LinearSession:
    """run(batch of b) takes 1 ms + 0.5 ms per sample on the fake clock; batches above fail_above raise."""

    def __init__(self, clock: FakeClock, fail_above: int | None = None) -> None:
        self.clock, self.fail_above = clock, fail_above

    def run(self, feeds):
        b = len(feeds["input"])
        if self.fail_above is not None and b > self.fail_above:
            raise MemoryError(f"cannot allocate a batch of {b}")
        self.clock.t += MS + b * MS // 2
        return [np.zeros((b, 10), np.float32)]

    def synchronize(self) -> None:
        pass


class QueuedSession(LinearSession):
    """Two streams: a queued pass of n requests of b samples takes (n / 2) * (1 ms + 0.5 ms * b)."""

    def throughput_streams(self) -> int:
        return 2

    def run_queued(self, feeds_list) -> None:
        b = len(feeds_list[0]["input"])
        self.clock.t += len(feeds_list) * (MS + b * MS // 2) // 2


def images(n: int = 16):
    return {"input": np.zeros((n, 1, 4, 4), np.float32)}


def cfg(**kw) -> offline.OfflineConfig:
    return offline.OfflineConfig(**{"warmup": 0, "iters": 4, "runs": 1, **kw})


def test_ladder_doubles_up_to_the_largest_batch_included():
    assert offline.batch_ladder(64) == [1, 2, 4, 8, 16, 32, 64]
    assert offline.batch_ladder(12) == [1, 2, 4, 8, 12]
    assert offline.batch_ladder(1) == [1]


def test_each_point_is_samples_over_timed_wall_time():
    clock = FakeClock()
    result = offline.sweep(LinearSession(clock), images(), cfg(max_batch=4), clock=clock)
    # batch b: 1 + 0.5 b ms per iteration -> b / (1 + 0.5 b) samples per ms
    assert [(p.batch, p.mode, p.streams) for p in result.points] == [(1, "sync", 1), (2, "sync", 1), (4, "sync", 1)]
    assert [p.samples_per_s for p in result.points] == pytest.approx([1000 / 1.5, 2000 / 2.0, 4000 / 3.0])
    assert [p.latency_ms_p50 for p in result.points] == pytest.approx([1.5, 2.0, 3.0])
    assert result.stop_reason == "reached the largest batch tried (4)"


def test_latency_limit_stops_after_the_first_batch_past_it():
    clock = FakeClock()
    result = offline.sweep(LinearSession(clock), images(), cfg(max_batch=64, latency_limit_ms=5.0), clock=clock)
    assert [p.batch for p in result.points] == [1, 2, 4, 8, 16]   # batch 16 takes 9 ms: measured, then stop
    assert "batch 16" in result.stop_reason and "5 ms limit" in result.stop_reason


def test_a_failing_larger_batch_ends_the_sweep_with_its_reason():
    clock = FakeClock()
    result = offline.sweep(LinearSession(clock, fail_above=4), images(), cfg(max_batch=64), clock=clock)
    assert [p.batch for p in result.points] == [1, 2, 4]
    assert result.stop_reason.startswith("batch 8 failed (MemoryError: cannot allocate a batch of 8")


def test_a_failing_batch_one_fails_the_job():
    clock = FakeClock()
    with pytest.raises(MemoryError):
        offline.sweep(LinearSession(clock, fail_above=0), images(), cfg(), clock=clock)


def test_memory_limit_stops_the_sweep():
    clock = FakeClock()
    rss = iter([100.0, 900.0, 2000.0])
    result = offline.sweep(LinearSession(clock), images(), cfg(max_batch=64, memory_limit_mb=1000),
                           rss_mb=lambda: next(rss), clock=clock)
    assert [p.batch for p in result.points] == [1, 2, 4]
    assert result.stop_reason == "batch 4: resident memory 2000 MB passed the 1000 MB limit"


def test_queued_streams_are_timed_at_batch_one_and_the_best_sync_batch():
    clock = FakeClock()
    result = offline.sweep(QueuedSession(clock), images(), cfg(max_batch=4, requests_per_stream=3), clock=clock)
    queued = [p for p in result.points if p.mode == "queued"]
    assert [(p.batch, p.streams) for p in queued] == [(1, 2), (4, 2)]
    # 6 requests of 4 samples over 2 streams: 3 * 3 ms = 9 ms for 24 samples
    assert queued[1].samples_per_s == pytest.approx(24 / 9e-3)
    assert queued[1].latency_ms_p50 is None
    best = result.best()
    assert (best.batch, best.streams, best.mode) == (4, 2, "queued")


def test_record_fields_name_the_batch_and_streams_of_the_best_point_and_survive_the_store():
    clock = FakeClock()
    fields = offline.sweep(LinearSession(clock), images(), cfg(max_batch=2), clock=clock).record_fields()
    assert fields["throughput_batch"] == 2 and fields["throughput_streams"] == 1
    assert fields["throughput_samples_per_s"] == pytest.approx(1000.0)
    rec = JobRecord.from_dict({"run_id": "r", "job_id": "j", "status": "ok", "device": "cpu", "backend": "onnxruntime",
                               "precision": "fp32", "checkpoint": "m", "scenario": "offline", **fields})
    again = JobRecord.from_dict(rec.to_dict())
    assert again.offline_sweep == rec.offline_sweep and len(again.offline_sweep) == 2
    assert again.throughput_mode == "sync"
