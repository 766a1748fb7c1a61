"""Confidence intervals for Quant-Trim − MAP differences: a paired bootstrap over evaluation images.

Top-1 accuracy and top-1 agreement are means of per-image 0/1 outcomes, so the difference between two
checkpoints evaluated on the same images is a mean of per-image differences; resampling images (with
replacement, both checkpoints together) gives its sampling spread. The per-image vectors come from
``<run_dir>/samples/<job_id>.npz`` (read by ``harness.store.reader.read_samples``). The bootstrap is
``scipy.stats.bootstrap`` (BCa); scipy is the ``analysis`` extra (``pip install ".[analysis]"``) — without it,
and without per-sample files, the interval is absent and the reason says why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.store.reader import read_samples

#: Fidelity metric -> key of the per-image vector in the samples file.
SAMPLE_KEYS = {"top1": "top1_correct", "top1_agreement": "top1_agree"}
CONFIDENCE = 0.95
N_RESAMPLES = 2000
NO_SAMPLES = "no CI (no per-sample file)"
NO_SCIPY = 'no CI (scipy not installed: pip install ".[analysis]")'


@dataclass(frozen=True)
class DeltaCI:
    """A Quant-Trim − MAP difference in the metric's units (fraction for top-1) and its CI, or why there is none."""

    delta: float
    low: float = math.nan
    high: float = math.nan
    n_images: int = 0
    note: str | None = None

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def paired_bootstrap_ci(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE,
                        n_resamples: int = N_RESAMPLES, seed: int = 0) -> DeltaCI:
    """mean(b) − mean(a) with a paired BCa bootstrap CI over images.

    Args:
        a, b: per-image outcomes, shape [n_images] (bool or float), the same images in the same order.
    Raises:
        ValueError: when the shapes differ (the two jobs did not see the same images).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"per-image vectors differ in length ({a.size} vs {b.size}): not the same images")
    delta = float(b.mean() - a.mean()) if a.size else math.nan
    if a.size < 2:
        return DeltaCI(delta, n_images=int(a.size), note="no CI (fewer than 2 images)")
    try:
        from scipy import stats
    except ImportError:
        return DeltaCI(delta, n_images=int(a.size), note=NO_SCIPY)
    diff = b - a
    if np.all(diff == diff[0]):  # every image moved the same way: the interval is that one value
        return DeltaCI(delta, delta, delta, int(a.size))
    res = stats.bootstrap((diff,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="BCa", vectorized=True, random_state=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):  # BCa can degenerate on very lopsided data
        res = stats.bootstrap((diff,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                              method="percentile", vectorized=True, random_state=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return DeltaCI(delta, low, high, int(a.size))


def per_image_mean(sample_files: Sequence[str | None], metric: str) -> tuple[np.ndarray | None, str | None]:
    """The per-image outcome averaged over the jobs of one side (several runs or seeds), or None with why."""
    key = SAMPLE_KEYS.get(metric)
    if key is None:
        return None, f"no CI for {metric} (per-image data exists for {', '.join(SAMPLE_KEYS)} only)"
    vectors = []
    for path in sample_files:
        data = read_samples(path)
        if data is None or key not in data:
            return None, NO_SAMPLES
        vectors.append(np.asarray(data[key], dtype=np.float64).ravel())
    if not vectors:
        return None, NO_SAMPLES
    if len({v.size for v in vectors}) != 1:
        return None, "no CI (the jobs evaluated different numbers of images)"
    return np.mean(vectors, axis=0), None


def recipe_delta_ci(map_files: Sequence[str | None], qt_files: Sequence[str | None], metric: str,
                    delta: float) -> DeltaCI:
    """The CI of one Quant-Trim − MAP cell from its jobs' per-sample files; ``delta`` is the table's own value."""
    a, why_a = per_image_mean(map_files, metric)
    b, why_b = per_image_mean(qt_files, metric)
    if a is None or b is None:
        return DeltaCI(delta, note=why_a or why_b)
    if a.size != b.size:
        return DeltaCI(delta, note=f"no CI (MAP saw {a.size} images, Quant-Trim {b.size})")
    return paired_bootstrap_ci(a, b)


def proportion_ci(value: float, n: float, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson interval of a proportion measured on ``n`` images (top-1 of one job), or None without scipy / n.

    For one job's accuracy the per-image bootstrap and the Wilson interval agree; Wilson needs only the count.
    """
    if not (math.isfinite(value) and math.isfinite(n)) or n < 1 or not 0.0 <= value <= 1.0:
        return None
    try:
        from scipy import stats
    except ImportError:
        return None
    ci = stats.binomtest(int(round(value * n)), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def format_delta_ci(ci: DeltaCI, scale: float = 100.0, unit: str = " pt") -> str:
    """e.g. "+0.40 pt [-0.20, +1.00]" (percentage points for fractions), or the delta and the reason."""
    if not math.isfinite(ci.delta):
        return ""
    text = f"{ci.delta * scale:+.2f}{unit}"
    if ci.has_interval:
        return f"{text} [{ci.low * scale:+.2f}, {ci.high * scale:+.2f}]"
    return f"{text} ({ci.note})" if ci.note else text


__all__ = ["CONFIDENCE", "DeltaCI", "NO_SAMPLES", "NO_SCIPY", "SAMPLE_KEYS", "format_delta_ci",
           "paired_bootstrap_ci", "per_image_mean", "proportion_ci", "recipe_delta_ci"]
