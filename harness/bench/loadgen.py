"""The measurement loop. It owns every timestamp; the session only answers run(feeds) -> outputs.

Protocol (paper A.3): warmup iterations, then `runs` timed runs of `iters` iterations each; the record
holds the median over runs of each run's statistic. Inputs are prepared before the timed region: one feeds
dict (graph input name -> N-first array) per iteration, built outside the clock.

``run_outputs`` is the one "run a model over inputs" evaluator (validation, the FP32 reference, analyses).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

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


Feeds = Mapping[str, np.ndarray]


def sample_count(inputs: Feeds) -> int:
    """N, the number of samples in per-input N-first arrays; every input must have the same N."""
    if not inputs:
        raise ValueError("no model inputs to feed")
    counts = {name: len(a) for name, a in inputs.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"model inputs have different sample counts {counts}; every input needs one row per sample")
    return next(iter(counts.values()))


def prepare_batches(inputs: Feeds, batch: int, count: int) -> list[dict[str, np.ndarray]]:
    """`count` feeds dicts of `batch` contiguous samples, cycling through the inputs (outside the timed region).

    Arrays keep their dtype (the data was prepared in the model's input dtype).
    """
    n = sample_count(inputs)
    if n == 0:
        raise ValueError("no evaluation samples to time with")
    feeds = []
    for i in range(count):
        idx = [(i * batch + j) % n for j in range(batch)]
        feeds.append({name: np.ascontiguousarray(a[idx]) for name, a in inputs.items()})
    return feeds


def measure(session: Session, inputs: Feeds, cfg: LoopConfig, power: Any = None,
            on_iteration: Callable[[int, int], None] | None = None,
            clock: Callable[[], int] = time.perf_counter_ns) -> LoopResult:
    """Warm up, then time `cfg.runs` × `cfg.iters` iterations of run + synchronize.

    `inputs` maps each graph input name to its N-first array. `power` (a harness.power monitor) is started
    after the warmup's final sync and stopped right after the last timed iteration of each run, so its window
    is exactly the timed loop. `clock` returns integer nanoseconds (``time.perf_counter_ns``; tests pass a fake
    one to check the statistics exactly).
    """
    warm = prepare_batches(inputs, cfg.batch, max(cfg.warmup, 1))
    timed = prepare_batches(inputs, cfg.batch, cfg.iters)
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


def run_outputs(session: Session, inputs: Feeds, batch: int, time_budget_s: float | None = None,
                batch_axes: Sequence[int] | None = None, pad_last: bool = False, start: int = 0,
                clock: Callable[[], float] = time.perf_counter) -> list[np.ndarray]:
    """Every output for the inputs, in graph order (the validation pass and the FP32 reference; not timed).

    `inputs` maps each graph input name to its N-first array. Returns one array per graph output: the
    per-batch outputs concatenated along that output's batch axis (`batch_axes[k]`, default 0), in the
    output's own layout (a time-major (T, N, C) output stays time-major; scoring moves the batch axis by the
    output's card). Dtypes are the session's. `pad_last` (models whose graph fixes the batch): a short final
    batch is padded with copies of its last sample, whose outputs are dropped.

    With a time budget the pass stops at the first batch boundary past it, so a very slow backend (untuned
    TVM at ~50 ms per image) scores a prefix of the evaluation set instead of running for hours.

    `start` resumes a pass an earlier call cut short (harness.bench.validation): only samples ``start..`` run and
    only their outputs are returned, in the very batches a pass from 0 would have fed (so `start` must be a
    multiple of `batch`; ValueError otherwise, or when ``start >= N``). `clock` returns seconds (tests pass a
    fake one).
    """
    n = sample_count(inputs)
    if n == 0:
        raise ValueError("no evaluation samples to run")
    if start < 0 or start >= n or start % batch:
        raise ValueError(f"a pass resumes at a batch boundary before the end: start {start} with batch {batch} "
                         f"over {n} samples")
    per_batch: list[list[np.ndarray]] = []
    done = 0
    deadline = None if time_budget_s is None else clock() + time_budget_s
    for first in range(start, n, batch):
        idx = np.arange(first, min(first + batch, n))
        done += len(idx)
        if pad_last and len(idx) < batch:
            idx = np.concatenate([idx, np.full(batch - len(idx), idx[-1])])
        feeds = {name: np.ascontiguousarray(a[idx]) for name, a in inputs.items()}
        ys = session.run(feeds)
        session.synchronize()
        if per_batch and len(ys) != len(per_batch[0]):
            raise RuntimeError(f"the session returned {len(ys)} outputs after {len(per_batch[0])} on earlier batches")
        per_batch.append([np.array(y, copy=True) for y in ys])
        if deadline is not None and clock() > deadline:
            break
    if not per_batch:
        raise ValueError("no evaluation samples to run")
    axes = list(batch_axes) if batch_axes is not None else [0] * len(per_batch[0])
    if len(axes) != len(per_batch[0]):
        raise ValueError(f"{len(axes)} batch axes given for {len(per_batch[0])} outputs")
    return [np.take(np.concatenate([b[k] for b in per_batch], axis=ax), np.arange(done), axis=ax)
            for k, ax in enumerate(axes)]


def durations_s(result: LoopResult) -> Sequence[float]:
    return [float(row.sum()) / 1e9 for row in result.samples_ns]


def measure_queued(session: Any, inputs: Any, batch: int, requests: int, warmup: int = 2, runs: int = 3,
                   clock: Callable[[], int] = time.perf_counter_ns) -> np.ndarray:
    """Wall nanoseconds of ``runs`` passes, each handing ``requests`` batches to ``session.run_queued`` at once.

    For runtimes with their own multi-stream queue (OpenVINO's AsyncInferQueue): the session keeps its streams
    busy and returns when every request is done; the loop still takes both timestamps, so a pass's
    samples/s is ``requests * batch / wall``. Per-request latency is the runtime's business and is not reported.
    Returns an int64 array of ``runs`` wall times.
    """
    warm = prepare_batches(inputs, batch, max(warmup, 1))
    timed = prepare_batches(inputs, batch, requests)
    for _ in range(warmup):
        session.run_queued(warm)
    walls = np.empty(runs, dtype=np.int64)
    for r in range(runs):
        t0 = clock()
        session.run_queued(timed)
        walls[r] = clock() - t0
    return walls
