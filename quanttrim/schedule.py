"""The λ_t curriculum of paper §3.3, evaluated from fractional epochs (pure Python, no torch)."""
from __future__ import annotations

import math


def blend_factor(epoch: float, warmup: float, ramp_end: float, horizon: float, cap: float = 1.0) -> float:
    """Global blend λ_t for (fractional) epoch t.

    0 before ``warmup`` (E_w); min(0.5, 0.5·((t−E_w)/(E_f−E_w))⁴) up to ``ramp_end`` (E_f);
    0.5 + 0.5·min(1, (t−E_f)/H)² afterwards; everything capped at ``cap`` (α_max).
    Evaluated per step with fractional t so that short runs ramp smoothly instead of in epoch-sized jumps.

    Args:
        epoch: training time t in epochs (fractional).
        warmup: E_w, end of the FP32 warmup.
        ramp_end: E_f, end of the quartic ramp (must be >= warmup).
        horizon: H, epochs from E_f to reach λ = 1 (0 means jump straight to 1 at E_f).
        cap: α_max in [0, 1] (1.0 for CNNs, ≈0.8 for ViTs).
    """
    if not (0.0 <= cap <= 1.0):
        raise ValueError(f"cap must lie in [0, 1], got {cap}")
    if ramp_end < warmup:
        raise ValueError(f"ramp_end ({ramp_end}) must be >= warmup ({warmup})")
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}")
    if math.isnan(epoch):
        raise ValueError("epoch is NaN")
    t = float(epoch)
    if t < warmup:
        lam = 0.0
    elif t < ramp_end:
        lam = min(0.5, 0.5 * ((t - warmup) / (ramp_end - warmup)) ** 4)
    else:
        frac = 1.0 if horizon == 0 else min(1.0, (t - ramp_end) / horizon)
        lam = 0.5 + 0.5 * frac ** 2
    return min(lam, cap)
