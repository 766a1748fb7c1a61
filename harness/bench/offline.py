"""The offline (maximum-throughput) scenario: a batch sweep, then the runtime's own streams where it has them.

MLPerf's offline scenario and OpenVINO ``benchmark_app -hint throughput`` report samples per second with every
sample available at once. Here: the session is timed at batch 1, 2, 4, ... (``batch_ladder``) by the same loop
as the single-stream scenario (``loadgen.measure``) until the batch's median latency passes the latency limit,
the job's resident memory passes the memory limit, the ladder's top is reached, or a batch fails (a static-batch
library, an allocation failure: the reason is kept). Where the session offers ``run_queued`` (several requests
in flight over the runtime's streams) the best batch and batch 1 are timed that way too. The record gets the
best point's throughput with the batch and streams that gave it, and every point of the sweep.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from harness.bench import loadgen


@dataclass(frozen=True)
class OfflineConfig:
    """How far the sweep goes and how long each point is timed."""

    #: Largest batch tried (the ladder doubles from 1 up to it).
    max_batch: int = 64
    #: Stop after the first batch whose median latency exceeds this (ms).
    latency_limit_ms: float = 1000.0
    #: Stop after the first batch that leaves the job's resident memory above this (MB; None: no limit).
    memory_limit_mb: float | None = None
    warmup: int = 3
    iters: int = 20
    runs: int = 3
    #: Requests in flight per queued pass, per stream (the runtime decides the streams).
    requests_per_stream: int = 8

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.iters < 1 or self.runs < 1 or self.warmup < 0 or self.requests_per_stream < 1:
            raise ValueError("offline: max_batch, iters, runs, requests_per_stream must be >= 1 and warmup >= 0")
        if self.latency_limit_ms <= 0:
            raise ValueError("offline: the latency limit must be > 0 ms")


@dataclass(frozen=True)
class SweepPoint:
    """One measured point: ``samples_per_s`` over the timed wall time; ``latency_ms_p50`` per batch (sync only)."""

    batch: int
    streams: int
    mode: str                         # "sync" (the loop's run per batch) or "queued" (the runtime's streams)
    samples_per_s: float
    latency_ms_p50: float | None = None


@dataclass(frozen=True)
class OfflineResult:
    points: tuple[SweepPoint, ...]
    stop_reason: str

    def best(self) -> SweepPoint:
        if not self.points:
            raise ValueError("the sweep measured no point")
        return max(self.points, key=lambda p: p.samples_per_s)

    def record_fields(self) -> dict[str, Any]:
        """The record's throughput fields (samples/s, the batch and streams that gave it, every point)."""
        best = self.best()
        return {"throughput_samples_per_s": best.samples_per_s, "throughput_batch": best.batch,
                "throughput_streams": best.streams, "throughput_mode": best.mode,
                "offline_sweep": [asdict(p) for p in self.points], "offline_stop_reason": self.stop_reason}


def batch_ladder(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to ``max_batch`` (included even when it is not a power of two)."""
    ladder, b = [], 1
    while b < max_batch:
        ladder.append(b)
        b *= 2
    return ladder + [max_batch]


def sync_point(result: loadgen.LoopResult) -> SweepPoint:
    """A sync point from the loop's samples: samples over the median run's summed iteration time."""
    wall_s = float(np.median(loadgen.durations_s(result)))
    iters = result.samples_ns.shape[1]
    return SweepPoint(result.batch, 1, "sync", result.batch * iters / wall_s, result.summary()["latency_ms_p50"])


def sweep(session: Any, inputs: Any, cfg: OfflineConfig, rss_mb: Callable[[], float] | None = None,
          clock: Callable[[], int] = time.perf_counter_ns) -> OfflineResult:
    """Time the session over the batch ladder, then queued where it can; see the module docstring.

    ``inputs`` is what ``loadgen.measure`` takes; ``rss_mb`` returns the job's resident memory now (MB). A
    failure at batch 1 is raised (the job failed); at a larger batch it ends the sweep, with its reason.
    """
    points: list[SweepPoint] = []
    stop = f"reached the largest batch tried ({cfg.max_batch})"
    for b in batch_ladder(cfg.max_batch):
        try:
            result = loadgen.measure(session, inputs, loadgen.LoopConfig(cfg.warmup, cfg.iters, cfg.runs, b),
                                     clock=clock)
        except Exception as exc:
            if b == 1:
                raise
            stop = f"batch {b} failed ({type(exc).__name__}: {str(exc)[:200]})"
            break
        point = sync_point(result)
        points.append(point)
        if point.latency_ms_p50 > cfg.latency_limit_ms:
            stop = f"batch {b}: median latency {point.latency_ms_p50:.1f} ms passed the {cfg.latency_limit_ms:g} ms limit"
            break
        rss = rss_mb() if rss_mb is not None else None
        if cfg.memory_limit_mb is not None and rss is not None and rss > cfg.memory_limit_mb:
            stop = f"batch {b}: resident memory {rss:.0f} MB passed the {cfg.memory_limit_mb:g} MB limit"
            break
    streams = getattr(session, "throughput_streams", None)
    if callable(streams):
        n = int(streams())
        best_sync = max(points, key=lambda p: p.samples_per_s).batch
        for b in sorted({1, best_sync}):
            walls = loadgen.measure_queued(session, inputs, b, n * cfg.requests_per_stream, runs=cfg.runs,
                                           clock=clock)
            wall_s = float(np.median(walls)) / 1e9
            points.append(SweepPoint(b, n, "queued", b * n * cfg.requests_per_stream / wall_s))
    return OfflineResult(tuple(points), stop)
