"""Side-by-side tables over the result store: the comparison, Quant-Trim − MAP deltas, cost and efficiency.

Everything here takes the DataFrame of ``harness.store.reader.load`` and returns DataFrames; rendering to text,
CSV, Markdown and JSON is in ``render``. A metric a job did not measure stays NaN and renders as an empty
cell, never as 0.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from devices.choices import did_you_mean, unknown_name
from harness.analysis.formats import (  # noqa: F401  (re-exported: one import for callers of compare)
    FORMATS, TABLE_TITLES, format_value, render, to_csv, to_jsonable, to_markdown, to_text)

IDENTITY_COLUMNS = ("model", "recipe", "checkpoint_name", "device", "backend", "precision", "calibration_method",
                    "precision_label")
#: Where the timing came from (harness.store.labels): a column in every table, so a stand-in is never read as
#: the device's own number.
ORIGIN_COLUMNS = ("timing_origin", "untuned")
LATENCY_COLUMNS = ("latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99", "latency_ms_mean",
                   "latency_ms_min", "latency_ms_max")
#: The offline scenario's best throughput and the batch, streams and mode that gave it (empty in single-stream
#: runs, so these columns show only where some job measured them).
THROUGHPUT_COLUMNS = ("throughput_samples_per_s", "throughput_batch", "throughput_streams", "throughput_mode")
POWER_COLUMNS = ("power_avg_w", "power_peak_w", "power_peak_w_mean", "power_p5_w", "power_p95_w",
                 "energy_per_inference_mj", "power_source")
FIDELITY_COLUMNS = ("top1", "top5", "top1_agreement", "logit_mse", "snr_db", "ece", "brier", "miou",
                    # role metrics of the primary output (a column shows only where some job measured it)
                    "probability_mse", "map50", "map50_95", "miou_vs_reference", "sequence_agreement",
                    "embedding_cosine")
#: Metrics the Quant-Trim − MAP table reports (fidelity first: that is what the recipe changes).
DELTA_METRICS = FIDELITY_COLUMNS + ("latency_ms_p50", "fps", "power_avg_w", "energy_per_inference_mj")
DELTA_KEYS = ("model", "device", "backend", "precision", "calibration_method")
COST_KEYS = ("device", "backend", "precision", "model")
TABLES = ("main", "deltas", "cost")
#: Left out of the terminal view unless --wide (CSV, JSON and Markdown always carry every column).
SECONDARY_COLUMNS = ("checkpoint_name", "latency_ms_mean", "latency_ms_min", "latency_ms_max", "power_p5_w",
                     "power_p95_w", "power_source", "device_display_name", "device_form_factor")
_DEFAULT_SORT = ("model", "device", "backend", "precision", "recipe", "calibration_method")
_FILTER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")


class CompareError(ValueError):
    """A filter or sort key the store does not have, or a malformed filter."""


# --- filtering and sorting ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Filter:
    """``key=value`` (comma = any of), ``key!=value``, ``key>=n``, ``key<=n``, ``key>n``, ``key<n``."""

    key: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> "Filter":
        m = _FILTER_RE.match(text)
        if not m:
            raise CompareError(f"bad filter {text!r}; write key=value, key!=value, key>=number or key<=number "
                               "(e.g. backend=onnxruntime,openvino or status=ok)")
        return cls(m.group(1), m.group(2), m.group(3))

    def mask(self, df: pd.DataFrame) -> pd.Series:
        if self.key not in df.columns:
            raise CompareError(f"unknown filter key {self.key!r}; {did_you_mean(self.key, df.columns)}"
                               f"valid keys: {', '.join(map(str, df.columns))}")
        col = df[self.key]
        if self.op in (">=", "<=", ">", "<"):
            try:
                ref = float(self.value)
            except ValueError:
                raise CompareError(f"filter {self.key}{self.op}{self.value}: {self.value!r} is not a number") from None
            num = pd.to_numeric(col, errors="coerce")
            return {">=": num >= ref, "<=": num <= ref, ">": num > ref, "<": num < ref}[self.op].fillna(False)
        wanted = [v.strip() for v in self.value.split(",")]
        hit = pd.Series(False, index=df.index)
        for v in wanted:
            hit |= _equals(col, v)
        return hit if self.op == "=" else ~hit


def _equals(col: pd.Series, value: str) -> pd.Series:
    low = value.lower()
    if low in ("", "none", "null", "nan"):
        return col.isna()
    if col.dtype.kind == "f" or col.dtype.kind in "iu":
        try:
            return (pd.to_numeric(col, errors="coerce") == float(value)).fillna(False)
        except ValueError:
            return pd.Series(False, index=col.index)
    if low in ("true", "false", "yes", "no"):
        truth = low in ("true", "yes")
        as_bool = col.map(lambda v: v if isinstance(v, (bool, np.bool_)) else None)
        if as_bool.notna().any():
            return as_bool.eq(truth).fillna(False).astype(bool)
    return col.astype(str).str.lower().eq(low) & col.notna()


def apply_filters(df: pd.DataFrame, filters: Iterable[str | Filter]) -> pd.DataFrame:
    for f in filters:
        f = f if isinstance(f, Filter) else Filter.parse(f)
        df = df[f.mask(df)]
    return df


def sort_frame(df: pd.DataFrame, sort: str | Sequence[str] | None) -> pd.DataFrame:
    """Sort by comma-separated keys; a leading '-' sorts that key descending; missing values go last."""
    if df.empty:
        return df
    if sort is None or sort == "" or sort == ():
        keys = [k for k in _DEFAULT_SORT if k in df.columns]
        asc = [True] * len(keys)
    else:
        items = sort.split(",") if isinstance(sort, str) else list(sort)
        keys, asc = [], []
        for item in items:
            item = item.strip()
            desc = item.startswith("-") or item.endswith(":desc")
            key = item.lstrip("-+").removesuffix(":desc").removesuffix(":asc")
            if key not in df.columns:
                raise CompareError(f"unknown sort key {key!r}; {did_you_mean(key, df.columns)}"
                                   f"valid keys: {', '.join(map(str, df.columns))}")
            keys.append(key)
            asc.append(not desc)
    if not keys:
        return df
    return df.sort_values(keys, ascending=asc, na_position="last", kind="mergesort",
                          key=_sort_key).reset_index(drop=True)


def _sort_key(col: pd.Series) -> pd.Series:
    if col.dtype == object:
        return col.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return col


# --- the tables --------------------------------------------------------------------------------------

def compare_table(df: pd.DataFrame, filters: Iterable[str | Filter] = (), sort: str | Sequence[str] | None = None,
                  ok_only: bool = False) -> pd.DataFrame:
    """The main table: one row per job with identity, status, latency, FPS, power, energy and fidelity.

    Metric columns no job measured are left out (a classification run has no mIoU); run_id is shown when
    more than one run is in view. Non-ok jobs keep their row with the failed stage and reason in ``note``.
    """
    df = apply_filters(df, filters)
    if ok_only:
        df = df[df["status"] == "ok"]
    metric_cols = [c for c in LATENCY_COLUMNS + ("fps",) + THROUGHPUT_COLUMNS + POWER_COLUMNS + FIDELITY_COLUMNS
                   if c in df.columns and df[c].notna().any()]
    cols = [c for c in IDENTITY_COLUMNS if c in df.columns] + ["status"] + \
        [c for c in ORIGIN_COLUMNS if c in df.columns] + metric_cols
    if df["run_id"].nunique() > 1:
        cols.insert(0, "run_id")
    out = df[cols].copy()
    note_cols = [c for c in _NOTE_FIELDS if c in df.columns]
    rows = (dict(zip(note_cols, vals)) for vals in zip(*(df[c].tolist() for c in note_cols)))
    out["note"] = [_note(r) for r in rows] if len(df) else pd.Series(dtype=object)
    return sort_frame(out, sort)


#: Between the parts of a note; reasons themselves often contain "; ", so the report splits on this instead.
NOTE_SEPARATOR = " | "
_NOTE_FIELDS = ("status", "failed_stage", "error_message", "power_estimated", "power_low_fidelity", "simulated",
                "latency_kind", "quick", "measured_on", "device", "untuned", "power_avg_w", "power_peak_w",
                "power_unavailable_reason", "dead_output_channels")


def _note(rec: dict[str, Any]) -> str | None:
    parts = []
    if rec.get("status") != "ok":
        stage = rec.get("failed_stage")
        msg = rec.get("error_message") or ""
        msg = msg.splitlines()[0] if msg else ""
        parts.append(f"{rec.get('status')}{' at ' + stage if stage else ''}{': ' + msg if msg else ''}")
    if rec.get("power_estimated") is True:
        parts.append("power estimated")
    if rec.get("power_low_fidelity") is True:
        parts.append("power low-fidelity (slow or coarse sensor)")
    if rec.get("latency_kind") == "estimated":
        parts.append("estimated latency (compiler performance model, not measured)")
    elif rec.get("simulated") is True:
        parts.append("simulated timing")
    measured_on = rec.get("measured_on")
    if isinstance(measured_on, str) and measured_on and measured_on != rec.get("device"):
        parts.append(f"measured on {measured_on}")
    if rec.get("untuned") is True:
        parts.append("untuned (no autotuning: not the backend's best speed)")
    if rec.get("quick") is True:
        parts.append("quick run")
    dead = rec.get("dead_output_channels")
    if rec.get("status") == "ok" and not _missing(dead) and dead > 0:
        parts.append(f"{int(dead)} dead output channel(s): constant where the FP32 reference varies "
                     "(see compare --outputs)")
    if (rec.get("status") == "ok" and _missing(rec.get("power_avg_w")) and _missing(rec.get("power_peak_w"))
            and rec.get("power_unavailable_reason")):
        parts.append("no power: " + str(rec["power_unavailable_reason"]))
    return NOTE_SEPARATOR.join(parts) or None


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def recipe_deltas(df: pd.DataFrame, filters: Iterable[str | Filter] = (),
                  metrics: Sequence[str] = DELTA_METRICS) -> pd.DataFrame:
    """Quant-Trim minus MAP, long format: one row per (model, device, backend, precision, calibration, metric).

    Several runs or seeds of one recipe are summarised by their median (``n_map``/``n_quanttrim`` say
    how many); ``delta_pct`` is relative to MAP. A metric only one side measured has an empty delta.
    """
    df = apply_filters(df, filters)
    df = df[(df["status"] == "ok") & df["recipe"].isin(["map", "quanttrim"])]
    cols = ["model", "device", "backend", "precision", "calibration_method", "metric", "map", "quanttrim",
            "delta", "delta_pct", "delta_ci_low", "delta_ci_high", "ci_note", "n_map", "n_quanttrim"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    from harness.analysis.uncertainty import SAMPLE_KEYS, recipe_delta_ci

    metrics = [m for m in metrics if m in df.columns and df[m].notna().any()]
    keyed = df.assign(**{k: df[k].astype(object).where(df[k].notna(), "") for k in DELTA_KEYS})
    med = keyed.groupby(list(DELTA_KEYS) + ["recipe"], sort=True)[metrics].median()
    counts = keyed.groupby(list(DELTA_KEYS) + ["recipe"], sort=True).size()
    files = keyed.groupby(list(DELTA_KEYS) + ["recipe"], sort=True)["samples_file"].agg(list) \
        if "samples_file" in keyed.columns else None
    rows = []
    for key, _ in keyed.groupby(list(DELTA_KEYS), sort=True):
        if (*key, "map") not in med.index or (*key, "quanttrim") not in med.index:
            continue
        m_row, q_row = med.loc[(*key, "map")], med.loc[(*key, "quanttrim")]
        for metric in metrics:
            a, b = float(m_row[metric]), float(q_row[metric])
            if math.isnan(a) and math.isnan(b):
                continue
            delta = b - a if not (math.isnan(a) or math.isnan(b)) else math.nan
            pct = 100.0 * delta / abs(a) if a not in (0.0,) and not math.isnan(delta) and math.isfinite(a) else math.nan
            ci_low = ci_high = math.nan
            ci_note = None
            if metric in SAMPLE_KEYS and not math.isnan(delta):
                # the CI is of the per-image mean difference; with one job per side that is the delta itself
                ci = recipe_delta_ci(files[(*key, "map")] if files is not None else [None],
                                     files[(*key, "quanttrim")] if files is not None else [None], metric, delta)
                ci_low, ci_high, ci_note = ci.low, ci.high, ci.note
            rows.append(dict(zip(DELTA_KEYS, key), metric=metric, map=a, quanttrim=b, delta=delta, delta_pct=pct,
                             delta_ci_low=ci_low, delta_ci_high=ci_high, ci_note=ci_note,
                             n_map=int(counts[(*key, "map")]), n_quanttrim=int(counts[(*key, "quanttrim")])))
    out = pd.DataFrame(rows, columns=cols)
    out["calibration_method"] = out["calibration_method"].replace("", None)
    return out


def cost_table(df: pd.DataFrame, filters: Iterable[str | Filter] = (), sort: str | Sequence[str] | None = None,
               include_stand_ins: bool = False) -> pd.DataFrame:
    """FPS per watt, energy per inference, price per FPS and per watt for each (device, backend, precision, model).

    ``power_peak_w`` is the average of the runs' peaks where the record has it (``power_peak_w_mean``), else the
    peak. ``price_eur_per_w`` is price / peak power; ``w_per_eur`` is the inverse, the quantity paper Table 10's
    "Price per Watt" column actually holds (e.g. RTX 3090: 190 W / 1500 EUR = 0.127). FPS per watt uses the
    average power over the timed loop (= inferences per joule at batch 1); where only energy per inference is
    known it is 1000 / energy_mJ. Several jobs (recipes, runs) of one key are summarised by their median.

    Jobs timed on a stand-in or a simulator say nothing about the device's price per FPS: they are left out
    (``attrs["excluded_stand_ins"]`` counts them) unless ``include_stand_ins``, and then kept apart by their
    ``timing_origin`` column.
    """
    df = apply_filters(df, filters)
    df = df[(df["status"] == "ok") & df["fps"].notna()]
    origin = df["timing_origin"] if "timing_origin" in df.columns else pd.Series("device", index=df.index)
    stand_in = origin.isin(["stand-in", "simulated"])
    excluded = 0 if include_stand_ins else int(stand_in.sum())
    if not include_stand_ins:
        df = df[~stand_in]
    keys = list(COST_KEYS) + (["timing_origin"] if include_stand_ins and "timing_origin" in df.columns else [])
    cols = ["device", "device_display_name", "device_form_factor", "backend", "precision", "model", "price_eur",
            "fps", "latency_ms_p50", "power_avg_w", "power_peak_w", "fps_per_w", "energy_per_inference_mj",
            "price_eur_per_fps", "price_eur_per_w", "w_per_eur", "power_estimated", "untuned", "n_jobs"]
    if include_stand_ins:
        cols.insert(cols.index("price_eur"), "timing_origin")
    if df.empty:
        out = pd.DataFrame(columns=cols)
        out.attrs["excluded_stand_ins"] = excluded
        return out
    peak = df["power_peak_w_mean"].where(df["power_peak_w_mean"].notna(), df["power_peak_w"])
    work = df.assign(power_peak_w=peak, price_eur=df["device_price_eur"],
                     power_estimated=df["power_estimated"].map(lambda v: bool(v) if v is not None else False))
    num = ["price_eur", "fps", "latency_ms_p50", "power_avg_w", "power_peak_w", "energy_per_inference_mj"]
    if "untuned" not in work.columns:
        work = work.assign(untuned=False)
    work = work.assign(untuned=work["untuned"].map(lambda v: bool(v) if v is not None else False))
    g = work.groupby(keys, sort=True, dropna=False)
    out = g[num].median()
    out["power_estimated"] = g["power_estimated"].any()
    out["untuned"] = g["untuned"].any()
    out["n_jobs"] = g.size()
    out["device_display_name"] = g["device_display_name"].first()
    out["device_form_factor"] = g["device_form_factor"].first()
    out = out.reset_index()
    fps_per_w = out["fps"] / out["power_avg_w"]
    out["fps_per_w"] = fps_per_w.where(fps_per_w.notna(), 1000.0 / out["energy_per_inference_mj"])
    out["price_eur_per_fps"] = out["price_eur"] / out["fps"]
    out["price_eur_per_w"] = out["price_eur"] / out["power_peak_w"]
    out["w_per_eur"] = out["power_peak_w"] / out["price_eur"]
    out = out.replace([np.inf, -np.inf], np.nan) if len(out) else out
    out = sort_frame(out[cols], sort if sort else ("device", "backend", "precision", "model"))
    out.attrs["excluded_stand_ins"] = excluded
    return out


def narrow(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables without SECONDARY_COLUMNS, for a terminal."""
    return {n: t.drop(columns=[c for c in SECONDARY_COLUMNS if c in t.columns]) for n, t in tables.items()}


def build_tables(df: pd.DataFrame, filters: Iterable[str] = (), sort: str | None = None,
                 which: Sequence[str] = TABLES, ok_only: bool = False,
                 include_stand_ins: bool = False) -> dict[str, pd.DataFrame]:
    """The named tables (main, deltas, cost) for one set of filters and sort keys.

    A filter on a record field selects records; a filter on a column only a table has (``metric`` of the
    deltas, ``fps_per_w`` of the cost table) selects that table's rows and leaves the other tables alone.
    """
    filters = [f if isinstance(f, Filter) else Filter.parse(f) for f in filters]
    record_filters = [f for f in filters if f.key in df.columns]
    table_filters = [f for f in filters if f.key not in df.columns]
    out: dict[str, pd.DataFrame] = {}
    for name in which:
        if name == "main":
            out[name] = compare_table(df, record_filters, sort, ok_only=ok_only)
        elif name == "deltas":
            out[name] = recipe_deltas(df, record_filters)
        elif name == "cost":
            out[name] = cost_table(df, record_filters, _sort_if_valid(sort, COST_KEYS), include_stand_ins)
        else:
            raise CompareError(unknown_name("table", name, TABLES))
    for f in table_filters:
        hit = [n for n, t in out.items() if f.key in t.columns]
        if not hit:
            valid = sorted(set(df.columns) | {c for t in out.values() for c in t.columns})
            raise CompareError(f"unknown filter key {f.key!r}; {did_you_mean(f.key, valid)}"
                               f"valid keys: {', '.join(map(str, valid))}")
        for n in hit:
            out[n] = out[n][f.mask(out[n])].reset_index(drop=True)
    return out


def _sort_if_valid(sort: str | None, keys: Sequence[str]) -> str | None:
    """The cost table has fewer columns: keep the user's sort only where it applies."""
    if not sort:
        return None
    items = [s.strip() for s in sort.split(",")]
    valid = set(keys) | {"fps", "latency_ms_p50", "power_avg_w", "power_peak_w", "fps_per_w",
                         "energy_per_inference_mj", "price_eur", "price_eur_per_fps", "price_eur_per_w"}
    kept = [s for s in items if s.lstrip("-+").removesuffix(":desc").removesuffix(":asc") in valid]
    return ",".join(kept) or None


__all__ = [
    "CompareError", "DELTA_METRICS", "FIDELITY_COLUMNS", "FORMATS", "Filter", "TABLES", "TABLE_TITLES",
    "THROUGHPUT_COLUMNS", "apply_filters",
    "build_tables", "compare_table", "cost_table", "format_value", "recipe_deltas", "render", "sort_frame",
    "to_csv", "to_jsonable", "to_markdown", "to_text",
]
