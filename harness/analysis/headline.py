"""The answer first: what the report's headline block says, computed from the result store.

Per device, the fastest configuration whose fidelity stays within a budget (top-1 agreement with the FP32
reference, else logit SNR); Quant-Trim against MAP on fidelity with the spread over the pairs measured; how
many timings were measured on the device, stood in for by another machine, or simulated; and the power status.
Numbers a job did not measure are left out, never counted as 0.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: Default fidelity budget: the configuration must agree with the FP32 reference on >= 99 % of images ...
AGREEMENT_BUDGET = 0.99
#: ... or, for outputs without a top-1 (detections, masks), keep an output SNR of at least 20 dB.
SNR_BUDGET_DB = 20.0


@dataclass(frozen=True)
class DeviceBest:
    """The fastest within-budget configuration of one device (or why there is none)."""

    device: str
    backend: str | None = None
    precision_label: str | None = None
    fps: float | None = None
    fidelity: str | None = None
    origin: str | None = None
    measured_on: str | None = None
    candidates: int = 0
    note: str | None = None


@dataclass(frozen=True)
class RecipeSummary:
    """Quant-Trim − MAP on one fidelity metric over every (device, backend, precision) pair measured."""

    metric: str
    median: float
    low: float
    high: float
    n_pairs: int
    n_wins: int
    ci_pairs: int = 0
    better: str = "higher"


@dataclass(frozen=True)
class Headline:
    devices: list[DeviceBest] = field(default_factory=list)
    recipes: list[RecipeSummary] = field(default_factory=list)
    origins: dict[str, int] = field(default_factory=dict)
    untuned: int = 0
    power: dict[str, int] = field(default_factory=dict)
    power_reason: str | None = None
    budget: str = ""


def _within_budget(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    if "top1_agreement" in rows and rows["top1_agreement"].notna().any():
        return (rows[rows["top1_agreement"] >= AGREEMENT_BUDGET],
                f"top-1 agreement with the FP32 reference \u2265 {100 * AGREEMENT_BUDGET:.0f} %")
    if "snr_db" in rows and rows["snr_db"].notna().any():
        return rows[rows["snr_db"] >= SNR_BUDGET_DB], f"output SNR \u2265 {SNR_BUDGET_DB:.0f} dB"
    return rows.iloc[0:0], "no fidelity measured"


def best_per_device(df: pd.DataFrame) -> tuple[list[DeviceBest], str]:
    """The fastest ok configuration within the fidelity budget, per device (timed on the device preferred)."""
    ok = df[(df["status"] == "ok") & df["fps"].notna()] if not df.empty else df
    out, budget = [], ""
    for device in sorted(df["device"].dropna().unique()) if not df.empty else []:
        rows = ok[ok["device"] == device]
        if rows.empty:
            out.append(DeviceBest(device, note="no job finished ok with a throughput"))
            continue
        inside, budget = _within_budget(rows)
        if inside.empty:
            out.append(DeviceBest(device, candidates=len(rows), note=f"no configuration within the budget ({budget})"))
            continue
        own = inside[inside.get("timing_origin", pd.Series("device", index=inside.index)) == "device"]
        pick = (own if not own.empty else inside).sort_values("fps", ascending=False).iloc[0]
        fid = (f"agreement {100 * pick['top1_agreement']:.1f} %" if _num(pick.get("top1_agreement"))
               else f"SNR {pick['snr_db']:.1f} dB" if _num(pick.get("snr_db")) else None)
        if _num(pick.get("top1")):
            fid = f"top-1 {100 * pick['top1']:.1f} %, " + (fid or "")
        out.append(DeviceBest(device, str(pick["backend"]), str(pick.get("precision_label") or pick["precision"]),
                              float(pick["fps"]), fid, str(pick.get("timing_origin") or "device"),
                              str(pick.get("measured_on") or "") or None, len(inside)))
    return out, budget


def recipe_summaries(deltas: pd.DataFrame) -> list[RecipeSummary]:
    """Median and range of Quant-Trim − MAP over the pairs, for the fidelity metrics both recipes measured."""
    out = []
    for metric, better in (("top1_agreement", "higher"), ("top1", "higher"), ("logit_mse", "lower"),
                           ("snr_db", "higher")):
        rows = deltas[(deltas["metric"] == metric) & deltas["delta"].notna()] if not deltas.empty else deltas
        if rows.empty:
            continue
        d = rows["delta"].astype(float)
        if metric == "logit_mse":  # relative: MSE spans orders of magnitude across precisions
            d = rows["delta_pct"].astype(float).dropna()
            if d.empty:
                continue
        wins = int((d > 0).sum() if better == "higher" else (d < 0).sum())
        ci = int(rows["delta_ci_low"].notna().sum()) if "delta_ci_low" in rows else 0
        out.append(RecipeSummary(metric, float(d.median()), float(d.min()), float(d.max()), len(d), wins, ci, better))
    return out


def build_headline(df: pd.DataFrame, deltas: pd.DataFrame) -> Headline:
    """Everything the headline block says (see the module docstring)."""
    devices, budget = best_per_device(df)
    ok = df[df["status"] == "ok"] if not df.empty else df
    timed = ok[ok["fps"].notna()] if not ok.empty else ok
    origins = Counter(str(o) for o in timed.get("timing_origin", pd.Series(dtype=object)).dropna())
    untuned = int(timed["untuned"].fillna(False).astype(bool).sum()) if "untuned" in timed else 0
    power: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for rec in ok.to_dict("records"):
        if _num(rec.get("power_avg_w")):
            power["estimated" if rec.get("power_estimated") is True else "measured"] += 1
        else:
            power["none"] += 1
            if rec.get("power_unavailable_reason"):
                reasons[str(rec["power_unavailable_reason"])] += 1
    return Headline(devices, recipe_summaries(deltas), dict(origins), untuned, dict(power),
                    reasons.most_common(1)[0][0] if reasons else None, budget)


def _num(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))


__all__ = ["AGREEMENT_BUDGET", "DeviceBest", "Headline", "RecipeSummary", "best_per_device", "build_headline",
           "recipe_summaries"]
