"""The measurement loop. It owns every timestamp; the session only answers run(batch).

Protocol (paper A.3): warmup iterations, then `runs` timed runs of `iters` iterations each; the record
holds the median over runs of each run's statistic. Inputs are prepared before the timed region.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from backends.base import Session


@dataclass(frozen=True)
class LoopConfig:
    warmup: int = 20
    iters: int = 200
    runs: int = 5
    batch: int = 1

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.iters < 1 or self.runs < 1 or self.batch < 1:
            raise ValueError("warmup must be >= 0 and iters, runs, batch >= 1")


QUICK_LOOP = LoopConfig(warmup=5, iters=50, runs=1, batch=1)

_PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LoopResult:
    samples_ns: np.ndarray  # (runs, iters) int64 nanoseconds per iteration
    batch: int

    def run_stats_ms(self) -> list[dict[str, float]]:
        out = []
        for row in self.samples_ns:
            ms = row.astype(np.float64) / 1e6
            stats = {f"p{p}": float(np.percentile(ms, p)) for p in _PERCENTILES}
            stats.update(mean=float(ms.mean()), min=float(ms.min()), max=float(ms.max()))
            out.append(stats)
        return out

    def summary(self) -> dict[str, Any]:
        """Record fields: median over runs of each run's statistic; FPS from the median latency."""
        per_run = self.run_stats_ms()
        fields: dict[str, Any] = {}
        for key in ("p50", "p90", "p95", "p99", "mean", "min", "max"):
            fields[f"latency_ms_{key}"] = float(np.median([r[key] for r in per_run]))
        fields["latency_ms_p50_runs"] = tuple(r["p50"] for r in per_run)
        fields["fps"] = self.batch * 1000.0 / fields["latency_ms_p50"]
        return fields


def prepare_batches(images: np.ndarray, batch: int, count: int) -> list[np.ndarray]:
    """`count` contiguous float32 batches cycling through the evaluation images (outside the timed region)."""
    if len(images) == 0:
        raise ValueError("no evaluation images to time with")
    n = len(images)
    batches = []
    for i in range(count):
        idx = [(i * batch + j) % n for j in range(batch)]
        batches.append(np.ascontiguousarray(images[idx], dtype=np.float32))
    return batches


def measure(session: Session, images: np.ndarray, cfg: LoopConfig, power: Any = None,
            on_iteration: Callable[[int, int], None] | None = None,
            clock: Callable[[], int] = time.perf_counter_ns) -> LoopResult:
    """Warm up, then time `cfg.runs` × `cfg.iters` iterations of run + synchronize.

    `power` (a harness.power monitor) is started after the warmup's final sync and stopped right after
    the last timed iteration of each run, so its window is exactly the timed loop. `clock` returns integer
    nanoseconds (``time.perf_counter_ns``; tests pass a fake one to check the statistics exactly).
    """
    warm = prepare_batches(images, cfg.batch, max(cfg.warmup, 1))
    timed = prepare_batches(images, cfg.batch, cfg.iters)
    run, sync = session.run, session.synchronize
    for x in warm[:cfg.warmup]:
        run(x)
    sync()
    samples = np.empty((cfg.runs, cfg.iters), dtype=np.int64)
    for r in range(cfg.runs):
        row = samples[r]
        if power is not None:
            power.start()
        for i, x in enumerate(timed):
            t0 = clock()
            run(x)
            sync()
            row[i] = clock() - t0
        if power is not None:
            power.stop()
        if on_iteration is not None:
            on_iteration(r + 1, cfg.runs)
    return LoopResult(samples, cfg.batch)


def run_outputs(session: Session, images: np.ndarray, batch: int, time_budget_s: float | None = None) -> np.ndarray:
    """Outputs for the images, in order (the validation pass; not timed).

    With a time budget the pass stops at the first batch boundary past it, so a very slow backend (untuned
    TVM at ~50 ms per image) scores a prefix of the evaluation set instead of running for hours.
    """
    outs = []
    deadline = None if time_budget_s is None else time.perf_counter() + time_budget_s
    for start in range(0, len(images), batch):
        x = np.ascontiguousarray(images[start:start + batch], dtype=np.float32)
        y = session.run(x)
        session.synchronize()
        outs.append(np.array(y, dtype=np.float32, copy=True))
        if deadline is not None and time.perf_counter() > deadline:
            break
    return np.concatenate(outs, axis=0)


def durations_s(result: LoopResult) -> Sequence[float]:
    return [float(row.sum()) / 1e9 for row in result.samples_ns]
