"""Per-output views of the store: one row per (job, output) and the table of the worst output channels.

Both read the records' ``outputs`` list (written by ``harness.scoring.score_outputs`` through the worker), so a
model's second output, or one dead class-score channel at 0 dB, is visible instead of hidden behind the primary
output's top-level fields. An exact match has snr_db empty and exact_match yes (+inf is not a JSON number).
"""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from harness.analysis.compare import Filter, apply_filters

JOB_COLUMNS = ("checkpoint_name", "device", "backend", "precision", "calibration_method")
OUTPUT_COLUMNS = ("output", "role", "shape", "snr_db", "exact_match", "mse", "cosine", "max_abs_error",
                  "worst_channel", "channels_snr_le_0db", "dead_channel_count")
#: Role metrics in the order they are shown (a column nothing has is left out).
ROLE_COLUMNS = ("top1", "top5", "top1_agreement", "logit_mse", "probability_mse", "ece", "brier", "map50", "map50_95",
                "map50_labels", "map50_95_labels", "detections_per_image", "reference_detections_per_image", "miou",
                "miou_vs_reference", "pixel_agreement", "position_agreement", "sequence_agreement",
                "embedding_cosine", "embedding_cosine_min")
WORST_CHANNEL_COLUMNS = JOB_COLUMNS + ("output", "role", "channel", "snr_db", "signal_share")


def _outputs_of(value: Any) -> list[dict[str, Any]]:
    return [o for o in value if isinstance(o, dict)] if isinstance(value, (list, tuple)) else []


def _worst(row: dict[str, Any]) -> str:
    worst = row.get("worst_channels") or []
    if not worst:
        return ""
    ch = worst[0]
    snr = "-inf" if ch.get("snr_db") is None else f"{ch['snr_db']:.1f}"
    return f"ch {ch.get('channel')}: {snr} dB"


def outputs_table(df: pd.DataFrame, filters: Iterable[str | Filter] = ()) -> pd.DataFrame:
    """One row per output of every job that scored its outputs: tensor metrics, worst channel, role metrics."""
    df = apply_filters(df, filters)
    rows = []
    for rec in df.to_dict("records"):
        for out in _outputs_of(rec.get("outputs")):
            row = {c: rec.get(c) for c in JOB_COLUMNS}
            row.update(output=out.get("name"), role=out.get("role"),
                       shape="x".join(str(d) for d in out.get("shape") or ()),
                       worst_channel=_worst(out))
            row.update({k: out.get(k) for k in OUTPUT_COLUMNS if k in out and k != "shape"})
            row.update({k: out.get(k) for k in ROLE_COLUMNS if k in out})
            rows.append(row)
    cols = list(JOB_COLUMNS) + list(OUTPUT_COLUMNS) + list(ROLE_COLUMNS)
    table = pd.DataFrame(rows, columns=cols)
    keep = [c for c in cols if c in JOB_COLUMNS or c in ("output", "role") or table[c].notna().any()]
    return table[keep].reset_index(drop=True)


def worst_channels_table(df: pd.DataFrame, filters: Iterable[str | Filter] = (), limit: int = 20) -> pd.DataFrame:
    """The ``limit`` worst output channels over the jobs in view, lowest SNR first (−inf: reference all zero).

    ``signal_share``: the channel's part of its output's reference energy (tiny: a class no image shows).
    """
    df = apply_filters(df, filters)
    rows = []
    for rec in df.to_dict("records"):
        for out in _outputs_of(rec.get("outputs")):
            for ch in out.get("worst_channels") or ():
                rows.append({**{c: rec.get(c) for c in JOB_COLUMNS}, "output": out.get("name"),
                             "role": out.get("role"), "channel": ch.get("channel"),
                             "snr_db": float("-inf") if ch.get("snr_db") is None else ch.get("snr_db"),
                             "signal_share": ch.get("signal_share")})
    table = pd.DataFrame(rows, columns=list(WORST_CHANNEL_COLUMNS))
    if table.empty:
        return table
    return table.sort_values("snr_db", kind="mergesort").head(limit).reset_index(drop=True)


__all__ = ["outputs_table", "worst_channels_table"]
