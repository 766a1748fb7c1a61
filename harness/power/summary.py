"""Pure arithmetic from sampled windows to the record's power fields (no threads, no I/O)."""
from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from harness.power.base import Reading

POWER_NUMERIC_FIELDS = (
    "power_avg_w", "power_peak_w", "power_peak_w_mean", "power_p5_w", "power_p95_w", "power_idle_w",
    "energy_per_inference_mj", "energy_per_inference_net_mj", "power_sample_period_ms", "power_samples",
)
#: Windows shorter than this many counter steps are integrated from instantaneous samples instead.
COUNTER_MIN_STEPS = 20


@dataclass
class Window:
    """One sampled interval (an idle window or one timed run)."""

    t_start: float
    t_stop: float | None = None
    samples: list[Reading] = field(default_factory=list)
    failure: str | None = None


@dataclass(frozen=True)
class WindowResult:
    energy_j: float
    duration_s: float
    powers_w: tuple[float, ...]
    intervals_s: tuple[float, ...]
    complete: bool


def empty_fields(reason: str | None, source: str | None = None) -> dict[str, Any]:
    """Every power field empty (None, never 0) with the reason."""
    out: dict[str, Any] = {k: None for k in POWER_NUMERIC_FIELDS}
    out.update(power_source=source, power_unavailable_reason=reason, power_estimated=False,
               power_low_fidelity=None)
    return out


def integrate_trapezoid(points: Sequence[tuple[float, float]], a: float, b: float) -> float:
    """∫_a^b p(t) dt with p linear between samples and held constant before the first/after the last."""
    if b <= a or not points:
        return 0.0
    ts = [t for t, _ in points]
    ps = [p for _, p in points]

    def value(x: float) -> float:
        i = bisect.bisect_right(ts, x)
        if i == 0:
            return ps[0]
        if i == len(ts):
            return ps[-1]
        t0, t1 = ts[i - 1], ts[i]
        if t1 == t0:
            return ps[i]
        return ps[i - 1] + (ps[i] - ps[i - 1]) * (x - t0) / (t1 - t0)

    knots = [a] + [t for t in ts if a < t < b] + [b]
    total = 0.0
    prev_t, prev_v = knots[0], value(knots[0])
    for t in knots[1:]:
        v = value(t)
        total += (t - prev_t) * (prev_v + v) / 2.0
        prev_t, prev_v = t, v
    return total


def analyse_window(w: Window, *, has_counter: bool, has_power: bool,
                   counter_resolution_s: float | None) -> WindowResult | None:
    """Energy, duration and power samples of one window; None when it holds nothing usable."""
    samples = sorted(w.samples, key=lambda r: r.t_s)
    if not samples:
        return None
    complete = w.failure is None and w.t_stop is not None
    t_end = w.t_stop if complete else max(w.t_start, samples[-1].t_s)
    # Polled sources stamp the boundary reads themselves; a streaming source's first sample may
    # predate the window (it is the value in force when the window opened).
    t_begin = w.t_start
    duration = t_end - t_begin
    if duration <= 0:
        return None
    intervals = tuple(b.t_s - a.t_s for a, b in zip(samples, samples[1:]) if b.t_s > a.t_s)

    counter = [r for r in samples if r.energy_j is not None]
    powers: list[float]
    if has_power:
        powers = [r.power_w for r in samples if r.power_w is not None]
    else:  # counter only (RAPL): power between consecutive counter reads
        powers = [(b.energy_j - a.energy_j) / (b.t_s - a.t_s) for a, b in zip(counter, counter[1:])
                  if b.t_s > a.t_s]
    use_counter = has_counter and len(counter) >= 2 and (
        not has_power or counter_resolution_s is None or duration >= COUNTER_MIN_STEPS * counter_resolution_s)
    if use_counter:
        energy = counter[-1].energy_j - counter[0].energy_j
        duration = counter[-1].t_s - counter[0].t_s
        if duration <= 0:
            return None
    elif has_power and powers:
        energy = integrate_trapezoid([(r.t_s, r.power_w) for r in samples if r.power_w is not None],
                                     t_begin, t_end)
    else:
        return None
    return WindowResult(energy, duration, tuple(powers), intervals, complete)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of already sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize_windows(runs: Sequence[Window], idle: Window | None, inferences_per_run: Sequence[int],
                      durations_s: Sequence[float], *, source: str, has_counter: bool, has_power: bool,
                      counter_resolution_s: float | None, period_ms: float,
                      native_period_s: float | None = None, note: str | None = None) -> dict[str, Any]:
    """The record's power fields from the timed-run windows (and the idle window, when measured)."""
    kw = dict(has_counter=has_counter, has_power=has_power, counter_resolution_s=counter_resolution_s)
    results = [analyse_window(w, **kw) for w in runs]
    measured = [(i, r) for i, r in enumerate(results) if r is not None]
    if not measured:
        return empty_fields(note or f"{source}: no samples in any timed run", source=source)

    total_e = sum(r.energy_j for _, r in measured)
    total_t = sum(r.duration_s for _, r in measured)
    avg_w = total_e / total_t
    peaks = [max(r.powers_w) for _, r in measured if r.powers_w]
    pooled = sorted(p for _, r in measured for p in r.powers_w)
    intervals = [d for _, r in measured for d in r.intervals_s]

    idle_w = None
    if idle is not None:
        idle_r = analyse_window(idle, **kw)
        if idle_r is not None:
            idle_w = idle_r.energy_j / idle_r.duration_s

    # Energy per inference from complete runs whose inference counts are known.
    n_runs = len(inferences_per_run)
    complete = [(i, r) for i, r in measured if r.complete and i < n_runs and inferences_per_run[i] > 0]
    e_inf = e_net = None
    if complete:
        n_inf = sum(inferences_per_run[i] for i, _ in complete)
        e_sum = sum(r.energy_j for _, r in complete)
        t_sum = sum(r.duration_s for _, r in complete)
        e_inf = e_sum / n_inf * 1e3
        if idle_w is not None:
            e_net = (e_sum - idle_w * t_sum) / n_inf * 1e3
    elif sum(inferences_per_run) > 0 and sum(durations_s) > 0:
        # Only partial runs: average power times the loop's time per inference.
        t_inf = sum(durations_s) / sum(inferences_per_run)
        e_inf = avg_w * t_inf * 1e3
        if idle_w is not None:
            e_net = (avg_w - idle_w) * t_inf * 1e3

    # The effective period: what the samples show, but never finer than the sampler's period or the
    # source's own refresh (a window shorter than one period has only its two boundary reads).
    period_s = max(period_ms / 1e3, native_period_s or 0.0)
    if intervals:
        period_s = max(period_s, statistics.median(intervals))
    low_fidelity = None
    if sum(inferences_per_run) > 0 and sum(durations_s) > 0:
        low_fidelity = period_s > sum(durations_s) / sum(inferences_per_run)

    return {
        "power_avg_w": avg_w,
        "power_peak_w": max(peaks) if peaks else None,
        "power_peak_w_mean": sum(peaks) / len(peaks) if peaks else None,
        "power_p5_w": _percentile(pooled, 5) if pooled else None,
        "power_p95_w": _percentile(pooled, 95) if pooled else None,
        "power_idle_w": idle_w,
        "energy_per_inference_mj": e_inf,
        "energy_per_inference_net_mj": e_net,
        "power_source": source,
        "power_sample_period_ms": period_s * 1e3,
        "power_samples": len(pooled),
        "power_unavailable_reason": note,
        "power_estimated": False,
        "power_low_fidelity": low_fidelity,
    }
