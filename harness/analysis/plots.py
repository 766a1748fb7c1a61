"""Figures over the result store, the trainer's logs and checkpoints (matplotlib, no pyplot state).

One visual language across every figure (the paper's Fig. 3 encoding):
colour = device, marker shape = precision, filled marker = the platform's default runtime (the first backend of
the device profile's list that is not a TensorRT route: NPUs their vendor runtime, NVIDIA CUDA, hosts ONNX
Runtime), unfilled = TensorRT and any other runtime. Estimated power is drawn faded
with dashed whiskers and says "estimated" in the legend; missing power is said in words, never drawn as 0.

Each ``*_figure`` function returns a ``matplotlib.figure.Figure``; artists carry ``gid`` tags so tests (and
anyone scripting) can find them. ``save_figure`` writes PNG and SVG.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from harness.store.reader import ResultStore, read_latencies_ms, recipe_from_name

KINDS = ("power-throughput", "accuracy-throughput", "latency", "training", "distributions")

#: Marker per precision; unknown precisions take the spare shapes in order.
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^", "int8-dynamic": "v", "w8a16": "P",
                     "w8abf16": "p", "int16": "h", "int4": "X", "w4a8": "*", "w4a16": "<"}
_SPARE_MARKERS = (">", "d", "H", "8", "1", "2")
#: Colour-blind-friendly qualitative palette (Okabe-Ito, then tab10) for devices.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
           "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
RECIPE_COLOURS = {"map": "#555555", "quanttrim": "#D55E00"}
RECIPE_LABELS = {"map": "MAP (FP32 baseline)", "quanttrim": "Quant-Trim"}
METRIC_LABELS = {
    "top1": "top-1 accuracy", "top5": "top-5 accuracy", "top1_agreement": "top-1 agreement with FP32 reference",
    "logit_mse": "logit MSE vs FP32 reference (lower is better)", "snr_db": "output SNR vs FP32 (dB)",
    "ece": "expected calibration error", "brier": "Brier score", "miou": "mIoU",
}
ACCURACY_METRICS = ("top1", "top1_agreement", "logit_mse", "miou", "snr_db")
FX_LABEL = "median throughput (FPS)"
POWER_LABEL = "average peak power (W)"
MAX_LABELLED_POINTS = 12  # distinct (device, backend, precision) spots per panel
MAX_LATENCY_PANELS = 12
BASE_RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
           "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
           "svg.fonttype": "none"}


class NoPlotData(ValueError):
    """There is nothing to draw for this kind of plot; the message says what was looked for."""


# --- styling -----------------------------------------------------------------------------------------

def device_colours(devices: Iterable[str]) -> dict[str, str]:
    """A stable colour per device (sorted names), so every figure of a report agrees."""
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(sorted(set(map(str, devices))))}


def precision_markers(precisions: Iterable[str]) -> dict[str, str]:
    out, spare = {}, iter(_SPARE_MARKERS * 4)
    for p in sorted(set(map(str, precisions))):
        out[p] = PRECISION_MARKERS.get(p) or next(spare)
    return out


def new_figure(n_panels: int, panel_size: tuple[float, float] = (5.6, 4.2), max_cols: int = 2,
               legend_space: float = 2.6) -> tuple[Figure, list[Any]]:
    import matplotlib

    n_panels = max(1, n_panels)
    ncols = min(n_panels, max_cols)
    if ncols == 1:  # a lone panel gets room for its labels beside the legend
        panel_size = (max(panel_size[0], 5.6), max(panel_size[1], 3.8))
    nrows = math.ceil(n_panels / ncols)
    with matplotlib.rc_context(BASE_RC):
        fig = Figure(figsize=(panel_size[0] * ncols + legend_space, panel_size[1] * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _style(ax: Any) -> None:
    ax.grid(True, alpha=0.3, linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _auto_log(ax: Any, values: np.ndarray, axis: str, ratio: float = 30.0) -> None:
    v = values[np.isfinite(values) & (values > 0)]
    if v.size and v.max() / v.min() > ratio:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        # label decades only: minor-tick labels crowd the axis (and cost most of the drawing time)
        (ax.xaxis if axis == "x" else ax.yaxis).set_minor_formatter(NullFormatter())


def _say(ax: Any, text: str, gid: str) -> None:
    """Put a message in the middle of an empty panel (instead of drawing zeros)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True, fontsize=9,
            color="#444444", gid=gid, bbox=dict(boxstyle="round", fc="#f6f6f6", ec="#bbbbbb"))


def _title(fig: Figure, text: str) -> None:
    """Figure title, left-aligned so it never runs into the legend column on the right."""
    fig.suptitle(text, fontsize=10, x=0.01, ha="left")


def _footnote(ax: Any, text: str, gid: str) -> None:
    ax.text(0.01, 0.01, text, transform=ax.transAxes, ha="left", va="bottom", fontsize=7, color="#666666",
            gid=gid, wrap=True)


def _encoding_legend(fig: Figure, colours: Mapping[str, str], markers: Mapping[str, str], *,
                     fill_note: bool = True, estimated: bool = False, extra: Sequence[Any] = ()) -> Any:
    handles: list[Any] = [Line2D([], [], linestyle="none", label="colour = device")]
    handles += [Line2D([], [], marker="o", linestyle="none", color=c, markersize=7, label=d) for d, c in colours.items()]
    handles.append(Line2D([], [], linestyle="none", label="marker = precision"))
    handles += [Line2D([], [], marker=m, linestyle="none", color="#444444", markersize=7, label=p)
                for p, m in markers.items()]
    if fill_note:
        handles.append(Line2D([], [], linestyle="none", label="fill = runtime"))
        handles.append(Line2D([], [], marker="o", linestyle="none", color="#444444", markersize=7,
                              label="filled: device's default runtime"))
        handles.append(Line2D([], [], marker="o", linestyle="none", color="#444444", markerfacecolor="none",
                              markersize=7, label="unfilled: other runtime (e.g. TensorRT)"))
    if estimated:
        handles.append(Line2D([], [], marker="o", linestyle="--", color="#444444", alpha=0.45, markersize=7,
                              label="estimated power (faded, dashed whiskers)"))
    handles += list(extra)
    leg = fig.legend(handles=handles, loc="outside right upper", frameon=False, handlelength=1.6)
    for text, h in zip(leg.get_texts(), handles):
        if h.get_label() in ("colour = device", "marker = precision", "fill = runtime"):
            text.set_fontweight("bold")
    leg.set_gid("encoding-legend")
    return leg


def _ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    return df[(df["status"] == "ok") & df["fps"].notna()]


def _filled(df: pd.DataFrame) -> pd.Series:
    """True where the job ran on its device's default runtime (first non-TensorRT backend of its profile)."""
    return df["is_default_runtime"].map(lambda v: bool(v) if isinstance(v, (bool, np.bool_)) else False)


def _estimated(df: pd.DataFrame) -> pd.Series:
    return df["power_estimated"].map(lambda v: bool(v) if isinstance(v, (bool, np.bool_)) else False)


def _models(df: pd.DataFrame) -> list[str]:
    return sorted(df["model"].fillna("").replace("", "(unnamed model)").unique().tolist())


def _model_rows(df: pd.DataFrame, model: str) -> pd.DataFrame:
    return df[df["model"].fillna("").replace("", "(unnamed model)") == model]


def _label_points(ax: Any, rows: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> None:
    """Name the backend beside each point when there are few enough to read (once per device/precision)."""
    spots = rows[["backend", "device", "precision"]].drop_duplicates()
    if len(spots) > MAX_LABELLED_POINTS:
        return
    done: set[tuple[str, str, str]] = set()
    for xi, yi, backend, device, precision in zip(x, y, rows["backend"].astype(str), rows["device"].astype(str),
                                                  rows["precision"].astype(str)):
        if not (np.isfinite(xi) and np.isfinite(yi)):
            continue
        spot = (backend, device, precision)
        if spot in done:
            continue
        done.add(spot)
        ax.annotate(backend, (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=6.5,
                    color="#555555", gid="backend-label")


# --- power vs throughput (paper Fig. 3 / 11) ----------------------------------------------------------

def power_throughput_figure(df: pd.DataFrame) -> Figure:
    """x = median FPS, y = average peak power, whiskers p5..p95, one panel per model."""
    ok = _ok_rows(df)
    if ok.empty:
        raise NoPlotData("no successful jobs with a throughput (status ok and fps) to plot")
    colours = device_colours(ok["device"])
    markers = precision_markers(ok["precision"])
    models = _models(ok)
    fig, axes = new_figure(len(models))
    any_estimated = False
    for ax, model in zip(axes, models):
        _style(ax)
        sub = _model_rows(ok, model)
        peak = sub["power_peak_w_mean"].where(sub["power_peak_w_mean"].notna(), sub["power_peak_w"])
        has = peak.notna()
        ax.set_title(model)
        ax.set_xlabel(FX_LABEL)
        ax.set_ylabel(POWER_LABEL)
        if not has.any():
            reasons = sorted({str(r) for r in sub["power_unavailable_reason"].dropna()})
            why = ("\n" + "\n".join(_wrap(r) for r in reasons[:3])) if reasons else ""
            _say(ax, f"no power measured for {model}{why}", gid="no-power")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        pts = _per_config(sub[has].assign(_y=peak[has], _filled=_filled(sub[has]), _est=_estimated(sub[has])),
                          {"_y": "mean", "power_p5_w": "median", "power_p95_w": "median"}, extra_keys=("_est",))
        any_estimated |= bool(pts["_est"].any())
        for (device, precision, filled, est), g in pts.groupby(["device", "precision", "_filled", "_est"], sort=True):
            x = g["fps"].to_numpy(float)
            y = g["_y"].to_numpy(float)
            lo = np.clip(y - g["power_p5_w"].to_numpy(float), 0, None)
            hi = np.clip(g["power_p95_w"].to_numpy(float) - y, 0, None)
            colour = colours[device]
            line, _caps, bars = ax.errorbar(
                x, y, yerr=np.vstack([lo, hi]), fmt=markers[precision],
                linestyle="none", color=colour, markerfacecolor=colour if filled else "none",
                markeredgecolor=colour, markersize=8, markeredgewidth=1.4, capsize=3, elinewidth=1.0,
                alpha=0.45 if est else 0.95, zorder=3)
            line.set_gid(f"point|{device}|{precision}|{'filled' if filled else 'unfilled'}"
                         f"{'|estimated' if est else ''}")
            line.set_label(f"{device} {precision}{' (estimated)' if est else ''}")
            for b in bars:
                if est:
                    b.set_linestyle("--")
                b.set_gid(f"whisker|{device}|{precision}{'|estimated' if est else ''}")
        _label_points(ax, pts, pts["fps"].to_numpy(float), pts["_y"].to_numpy(float))
        _auto_log(ax, pts["fps"].to_numpy(float), "x")
        _auto_log(ax, pts["_y"].to_numpy(float), "y")
        missing = sub[~has]
        if len(missing):
            reasons = sorted({str(r) for r in missing["power_unavailable_reason"].dropna()})
            _footnote(ax, f"{len(missing)} job(s) without power, not drawn" + (f": {_wrap(reasons[0], 70)}"
                                                                               if reasons else ""), gid="no-power-note")
        stand_in = _stand_in(sub[has])
        if stand_in:
            ax.set_title(f"{model}\n({stand_in} point(s) timed on a stand-in host)", fontsize=9)
    _encoding_legend(fig, colours, markers, estimated=any_estimated)
    _title(fig, "Power vs throughput (batch 1; whiskers: 5th-95th percentile power)")
    return fig


#: One point per configuration: repeated runs and seeds of the same job collapse to one marker.
CONFIG_KEYS = ("device", "backend", "precision", "calibration_method", "recipe", "checkpoint_name", "_filled")


def _per_config(rows: pd.DataFrame, how: Mapping[str, str], extra_keys: Sequence[str] = ()) -> pd.DataFrame:
    """x = the median FPS over runs (the paper's protocol), y aggregated as ``how`` says, per configuration."""
    keys = [k for k in CONFIG_KEYS if k in rows.columns] + list(extra_keys)
    if rows.empty:
        return rows
    filled = rows.assign(**{k: rows[k].astype(object).where(rows[k].notna(), "") for k in keys})
    agg = {"fps": "median", **how}
    if "measured_on" in rows.columns:
        agg["measured_on"] = "first"
    out = filled.groupby(keys, sort=True, dropna=False).agg(agg).reset_index()
    return out.replace({"calibration_method": {"": None}, "recipe": {"": None}})


def _stand_in(rows: pd.DataFrame) -> int:
    if "measured_on" not in rows:
        return 0
    m = rows["measured_on"]
    return int((m.notna() & (m.astype(str) != rows["device"].astype(str))).sum())


def _wrap(text: str, width: int = 60, lines: int = 4) -> str:
    import textwrap

    parts = textwrap.wrap(str(text), width)
    return "\n".join(parts[:lines]) + (" \u2026" if len(parts) > lines else "")


# --- accuracy vs throughput ---------------------------------------------------------------------------

def pick_accuracy_metric(df: pd.DataFrame) -> str:
    for m in ACCURACY_METRICS:
        if m in df.columns and df[m].notna().any():
            return m
    raise NoPlotData("no fidelity metric measured (looked for " + ", ".join(ACCURACY_METRICS) + ")")


def accuracy_throughput_figure(df: pd.DataFrame, metric: str | None = None) -> Figure:
    """y = a fidelity metric (top-1 by default, else logit MSE ...), x = median FPS; arrows MAP -> Quant-Trim."""
    ok = _ok_rows(df)
    if ok.empty:
        raise NoPlotData("no successful jobs with a throughput (status ok and fps) to plot")
    metric = metric or pick_accuracy_metric(ok)
    if metric not in ok.columns:
        raise NoPlotData(f"unknown metric {metric!r}; valid: {', '.join(METRIC_LABELS)}")
    ok = ok[ok[metric].notna()]
    if ok.empty:
        raise NoPlotData(f"no successful job measured {metric}")
    colours = device_colours(ok["device"])
    markers = precision_markers(ok["precision"])
    models = _models(ok)
    fig, axes = new_figure(len(models))
    arrows = 0
    for ax, model in zip(axes, models):
        _style(ax)
        sub = _per_config(_model_rows(ok, model).assign(_filled=lambda d: _filled(d)), {metric: "median"})
        for (device, precision, filled), g in sub.groupby(["device", "precision", "_filled"], sort=True):
            colour = colours[device]
            (line,) = ax.plot(g["fps"].to_numpy(float), g[metric].to_numpy(float), linestyle="none",
                              marker=markers[precision], color=colour, markerfacecolor=colour if filled else "none",
                              markeredgecolor=colour, markersize=8, markeredgewidth=1.4, zorder=3)
            line.set_gid(f"point|{device}|{precision}|{'filled' if filled else 'unfilled'}")
        arrows += _recipe_arrows(ax, sub, metric)
        _label_points(ax, sub, sub["fps"].to_numpy(float), sub[metric].to_numpy(float))
        ax.set_title(model)
        ax.set_xlabel(FX_LABEL)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        _auto_log(ax, sub["fps"].to_numpy(float), "x")
        if metric == "logit_mse":
            _auto_log(ax, sub[metric].to_numpy(float), "y", ratio=10.0)
    extra = [Line2D([], [], color="#333333", marker=r"$\rightarrow$", linestyle="-", linewidth=0.9,
                    label="MAP \u2192 Quant-Trim (same job)")] if arrows else []
    _encoding_legend(fig, colours, markers, extra=extra)
    _title(fig, f"{METRIC_LABELS.get(metric, metric)} vs throughput")
    return fig


def _recipe_arrows(ax: Any, sub: pd.DataFrame, metric: str, limit: int = 200) -> int:
    keys = ["device", "backend", "precision", "calibration_method"]
    pairs = sub[sub["recipe"].isin(["map", "quanttrim"])]
    if pairs.empty:
        return 0
    keyed = pairs.assign(calibration_method=pairs["calibration_method"].fillna(""))
    med = keyed.groupby(keys + ["recipe"])[["fps", metric]].median()
    n = 0
    for key, _ in keyed.groupby(keys):
        if (*key, "map") in med.index and (*key, "quanttrim") in med.index and n < limit:
            a, b = med.loc[(*key, "map")], med.loc[(*key, "quanttrim")]
            ann = ax.annotate("", xy=(b["fps"], b[metric]), xytext=(a["fps"], a[metric]),
                              arrowprops=dict(arrowstyle="->", color="#333333", lw=0.9, shrinkA=4, shrinkB=4))
            ann.set_gid(f"recipe-arrow|{key[0]}|{key[1]}|{key[2]}")
            n += 1
    return n


# --- latency distributions ----------------------------------------------------------------------------

def latency_figure(df: pd.DataFrame, max_panels: int = MAX_LATENCY_PANELS) -> Figure:
    """Per (model, device) panel, one box per backend/precision from the raw latency files.

    Jobs without a raw file are drawn from their record's percentiles (p50 marker, p50-p99 bar, min-max
    line) and labelled "percentiles only".
    """
    ok = df[(df["status"] == "ok") & df["latency_ms_p50"].notna()] if not df.empty else df
    if ok.empty:
        raise NoPlotData("no successful jobs with latencies to plot")
    colours = device_colours(ok["device"])
    ok = ok.assign(_model=ok["model"].fillna("").replace("", "(unnamed model)"))
    panels = sorted(ok.groupby(["_model", "device"]).groups.keys())
    dropped = len(panels) - max_panels
    panels = panels[:max_panels]
    fig, axes = new_figure(len(panels), panel_size=(4.4, 3.4), max_cols=3, legend_space=3.0)
    any_raw = any_summary = False
    for ax, (model, device) in zip(axes, panels):
        _style(ax)
        sub = ok[(ok["_model"] == model) & (ok["device"] == device)]
        colour = colours[device]
        labels, all_vals = [], []
        for i, ((backend, precision), g) in enumerate(sub.groupby(["backend", "precision"], sort=True)):
            filled = bool(_filled(g).any())
            files = [f for f in g["latency_file"].dropna().tolist() if Path(f).is_file()]
            label = f"{backend}\n{precision}"
            if files:
                vals = np.concatenate([read_latencies_ms(f) for f in files])
                bp = ax.boxplot([vals], positions=[i], widths=0.6, whis=(1, 99), showfliers=False,
                                patch_artist=True, manage_ticks=False)
                box = bp["boxes"][0]
                box.set(facecolor=colour if filled else "white", alpha=0.55 if filled else 1.0, edgecolor=colour,
                        linewidth=1.3)
                box.set_gid(f"latency-box|{backend}|{precision}|{'filled' if filled else 'unfilled'}")
                for med in bp["medians"]:
                    med.set(color="#222222", linewidth=1.4)
                all_vals.append(vals)
                any_raw = True
            else:
                p50 = float(np.median(g["latency_ms_p50"]))
                p99 = float(np.median(g["latency_ms_p99"])) if g["latency_ms_p99"].notna().any() else p50
                lo = float(np.median(g["latency_ms_min"])) if g["latency_ms_min"].notna().any() else p50
                hi = float(np.median(g["latency_ms_max"])) if g["latency_ms_max"].notna().any() else p99
                ax.vlines(i, lo, hi, color=colour, linewidth=0.8, gid=f"latency-range|{backend}|{precision}")
                ax.vlines(i, p50, p99, color=colour, linewidth=5, alpha=0.5)
                ax.plot([i], [p50], marker="o", color=colour, markerfacecolor=colour if filled else "white",
                        gid=f"latency-summary|{backend}|{precision}")
                label += "*"
                all_vals.append(np.array([lo, hi]))
                any_summary = True
            labels.append(label)
        if len(labels) > 4:  # many groups: one slanted line each instead of overlapping two-line labels
            ax.set_xticks(range(len(labels)), [lb.replace("\n", " ") for lb in labels], fontsize=7, rotation=35,
                          ha="right", rotation_mode="anchor")
        else:
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylabel("latency per batch (ms)")
        ax.set_title(f"{model} on {device}")
        if all_vals:
            _auto_log(ax, np.concatenate(all_vals), "y", ratio=20.0)
    handles = [Patch(facecolor=c, alpha=0.55, edgecolor=c, label=d) for d, c in colours.items()]
    handles.append(Patch(facecolor="white", edgecolor="#444444", label="unfilled: other runtime"))
    if any_raw:
        handles.append(Line2D([], [], color="#222222", label="box: p25-p75, median; whiskers: p1-p99"))
    if any_summary:
        handles.append(Line2D([], [], color="#444444", linewidth=5, alpha=0.5, label="* no raw file: p50-p99 bar,\n  min-max line (recorded percentiles)"))
    fig.legend(handles=handles, loc="outside right upper", frameon=False).set_gid("encoding-legend")
    title = "Latency distributions per backend (raw per-iteration timings)"
    if dropped > 0:
        title += f"; {dropped} more model/device panel(s) not shown (filter with --filter)"
    _title(fig, title)
    return fig


# --- training dynamics (paper Figs 4, 5, 8, 10) -------------------------------------------------------

_EPOCH_KEYS = ("epoch", "ep")
_ACC_KEYS = ("val_acc", "val_top1", "val_accuracy", "test_acc", "test_top1", "eval_acc", "acc", "top1", "accuracy",
             "train_acc", "val_miou", "miou")
_LOSS_KEYS = ("val_loss", "test_loss", "eval_loss", "loss", "train_loss")
_TRAIN_LOSS_KEYS = ("train_loss", "loss")
#: The trainer's weight outlier ratio (median over layers of max|w| / p99|w|): reverse pruning pulls it to 1.
_RATIO_KEYS = ("weight_max_over_p99_median",)
_LAMBDA_KEYS = ("lambda", "lam", "lambda_t", "blend", "blend_factor", "lambda_mean", "\u03bb")


@dataclass
class TrainingLog:
    """One training run's per-epoch series (read tolerantly from a JSONL log)."""

    path: str
    recipe: str
    seed: str
    epochs: np.ndarray
    series: dict[str, np.ndarray] = field(default_factory=dict)


def find_training_logs(paths: Iterable[str | Path]) -> list[Path]:
    """Every *.jsonl under ``paths`` that is not a result store's records.jsonl and has epoch entries."""
    out: list[Path] = []
    for p in map(Path, paths):
        cands = [p] if p.is_file() else sorted(p.rglob("*.jsonl")) if p.is_dir() else []
        for c in cands:
            if c.name == "records.jsonl" or not c.is_file():
                continue
            try:
                with open(c, encoding="utf-8", errors="replace") as fh:
                    head = [fh.readline() for _ in range(20)]
            except OSError:
                continue
            if any(_parse_line(line) and any(k in _parse_line(line) for k in _EPOCH_KEYS) for line in head):
                out.append(c)
    return out


def _parse_line(line: str) -> dict[str, Any] | None:
    try:
        d = json.loads(line)
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def read_training_log(path: str | Path) -> TrainingLog:
    """Per-epoch values (the last value logged for each epoch wins); recipe/seed from the log or the path."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            d = _parse_line(line)
            if d is None:
                continue
            for k in ("recipe", "seed", "config"):
                if k in d and k not in meta:
                    meta[k] = d[k]
            ep = next((d[k] for k in _EPOCH_KEYS if k in d), None)
            kind = str(d.get("kind", d.get("type", d.get("event", "epoch")))).lower()
            if ep is None or kind in ("step", "batch", "iter", "iteration"):
                continue
            rows.append({**d, "_epoch": float(ep)})
    if not rows:
        raise NoPlotData(f"{path}: no per-epoch entries (looked for keys {', '.join(_EPOCH_KEYS)})")
    frame = pd.DataFrame(rows).groupby("_epoch", sort=True).last()
    series: dict[str, np.ndarray] = {}
    for col in frame.columns:
        if frame[col].dtype == object and frame[col].map(lambda v: isinstance(v, (dict, list))).any():
            continue  # nested per-layer statistics (weights/activations ranges) are not per-epoch series
        vals = pd.to_numeric(frame[col], errors="coerce")
        if vals.notna().any():
            series[str(col)] = vals.to_numpy(float)
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    recipe = (meta.get("recipe") or config.get("recipe") or _recipe_from_path(path)
              or (path.parent.name if path.stem == "log" else path.stem))
    recipe = "quanttrim" if str(recipe).lower().replace("-", "").replace("_", "") == "quanttrim" else str(recipe).lower()
    seed = meta.get("seed", config.get("seed"))
    if seed is None:
        m = re.search(r"seed[-_]?(\d+)|(?:^|[-_/])s(\d+)(?:[-_/.]|$)", str(path))
        seed = (m.group(1) or m.group(2)) if m else path.stem
    return TrainingLog(str(path), recipe, str(seed), frame.index.to_numpy(float), series)


def _recipe_from_path(path: Path) -> str | None:
    for part in reversed(path.parts):
        r = recipe_from_name(Path(part).stem)
        if r:
            return r
    return None


def _first_key(logs: Sequence[TrainingLog], keys: Sequence[str]) -> str | None:
    for k in keys:
        if any(k in log.series for log in logs):
            return k
    return None


def training_figure(logs: Sequence[TrainingLog]) -> Figure:
    """Accuracy and loss per epoch per recipe (mean line, min-max band over seeds), λ on a second axis."""
    if not logs:
        raise NoPlotData("no training logs (per-epoch JSONL with an 'epoch' key) found")
    acc_key = _first_key(logs, _ACC_KEYS)
    loss_key = _first_key(logs, _LOSS_KEYS)
    lam_key = _first_key(logs, _LAMBDA_KEYS)
    ratio_key = _first_key(logs, _RATIO_KEYS)
    panels = [k for k in (acc_key, loss_key, ratio_key) if k]
    if not panels:
        raise NoPlotData("training logs have neither an accuracy key (" + ", ".join(_ACC_KEYS[:4]) + ", ...) nor a "
                         "loss key (" + ", ".join(_LOSS_KEYS) + ")")
    fig, axes = new_figure(len(panels), panel_size=(5.0, 3.6), max_cols=3, legend_space=2.4)
    by_recipe: dict[str, list[TrainingLog]] = {}
    for log in logs:
        by_recipe.setdefault(log.recipe, []).append(log)
    palette = iter(PALETTE[2:])
    colours = {r: RECIPE_COLOURS.get(r) or next(palette) for r in sorted(by_recipe)}
    handles: list[Any] = []
    for ax, key in zip(axes, panels):
        _style(ax)
        scale = 100.0 if key == acc_key and _max_value(logs, key) <= 1.0 else 1.0
        for recipe, runs in sorted(by_recipe.items()):
            epochs, stack = _aligned(runs, key)
            if stack is None:
                continue
            stack = stack * scale
            mean = np.nanmean(stack, axis=0)
            (line,) = ax.plot(epochs, mean, color=colours[recipe], linewidth=1.6,
                              label=f"{RECIPE_LABELS.get(recipe, recipe)} (n={len(runs)} seed{'s' if len(runs) > 1 else ''})")
            line.set_gid(f"train-line|{key}|{recipe}")
            if len(runs) > 1:
                band = ax.fill_between(epochs, np.nanmin(stack, axis=0), np.nanmax(stack, axis=0),
                                       color=colours[recipe], alpha=0.2, linewidth=0)
                band.set_gid(f"seed-band|{key}|{recipe}")
            if ax is axes[0]:
                handles.append(line)
        ax.set_xlabel("epoch")
        ax.set_ylabel(_train_label(key, scale))
        if lam_key:
            lam_runs = [r for r in logs if lam_key in r.series and np.nanmax(r.series[lam_key]) > 0] or \
                       [r for r in logs if lam_key in r.series]
            epochs, lam = _aligned(lam_runs, lam_key)
            if lam is not None:
                ax2 = ax.twinx()
                (lline,) = ax2.plot(epochs, np.nanmean(lam, axis=0), color="#7f7f7f", linestyle="--", linewidth=1.2,
                                    label="\u03bb (fake-quant blend)")
                lline.set_gid("lambda-line")
                ax2.set_ylabel("\u03bb (blend factor)")
                ax2.set_ylim(-0.02, max(1.02, float(np.nanmax(lam)) * 1.05))
                ax2.grid(False)
                if ax is axes[0]:
                    handles.append(lline)
    if len(by_recipe) and any(len(r) > 1 for r in by_recipe.values()):
        handles.append(Patch(facecolor="#999999", alpha=0.3, label="band: min-max over seeds"))
    fig.legend(handles=handles, loc="outside right upper", frameon=False).set_gid("training-legend")
    _title(fig, "Training dynamics")
    return fig


def _max_value(logs: Sequence[TrainingLog], key: str) -> float:
    vals = [np.nanmax(log.series[key]) for log in logs if key in log.series and np.isfinite(log.series[key]).any()]
    return float(max(vals)) if vals else 0.0


def _train_label(key: str, scale: float) -> str:
    if key in _RATIO_KEYS:
        return "weight max|w| / p99|w| (median over layers)"
    if key in _LOSS_KEYS:
        return key.replace("_", " ")
    return f"{key.replace('_', ' ')}{' (%)' if scale == 100.0 else ''}"


def _aligned(runs: Sequence[TrainingLog], key: str) -> tuple[np.ndarray, np.ndarray | None]:
    runs = [r for r in runs if key in r.series]
    if not runs:
        return np.array([]), None
    epochs = np.unique(np.concatenate([r.epochs for r in runs]))
    stack = np.full((len(runs), len(epochs)), np.nan)
    for i, r in enumerate(runs):
        stack[i, np.searchsorted(epochs, r.epochs)] = r.series[key]
    return epochs, stack


# --- weight and activation distributions (paper Figs 2, 9) --------------------------------------------

_WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
_ACT_OPS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Gelu", "Silu", "Mish", "Tanh",
            "PRelu", "Elu", "Selu", "Softplus"}
_NAMED_GROUP = re.compile(r"(layer\d+|stage\d+|block\d+|features[._]\d+|encoder[._]layer[._]\d+|blocks[._]\d+)")


def _weight_key(node: Any, init_name: str) -> str:
    """A layer's name for grouping: the node name ("/layer2/layer2.0/conv1/Conv") carries the block even when
    BatchNorm folding left the initializer anonymous ("onnx::Conv_213")."""
    return f"{node.name}|{init_name}" if node.name else init_name


def _weight_tensors(model: Any) -> list[tuple[str, np.ndarray]]:
    """(layer key, array) of the weights of Conv/Gemm/MatMul nodes in graph order (BN already folded)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out, seen = [], set()
    for node in model.graph.node:
        idx = _WEIGHT_OPS.get(node.op_type)
        if idx is None or len(node.input) <= idx:
            continue
        name = node.input[idx]
        if name in inits and name not in seen:
            arr = numpy_helper.to_array(inits[name])
            if arr.ndim >= 2 and np.issubdtype(arr.dtype, np.floating):
                seen.add(name)
                out.append((_weight_key(node, name), arr.astype(np.float32, copy=False)))
    return out


def layer_groups(names: Sequence[str]) -> list[str]:
    """A group per layer: the block name when the names carry one (layer2...), else stem/early/middle/late/head."""
    named = [_NAMED_GROUP.search(n) for n in names]
    hits = [i for i, m in enumerate(named) if m]
    if hits:
        groups, last = [], None
        for i, m in enumerate(named):
            if m:
                last = m.group(1).replace("_", ".")
                groups.append(last)
            else:  # before the first block: the stem; after the last: the head; between: the block it sits in
                groups.append("stem" if i < hits[0] else "head" if i > hits[-1] else str(last))
        return groups
    n = len(names)
    if n <= 2:
        return ["stem", "head"][:n] if n == 2 else ["all layers"] * n
    out = ["stem"] + [""] * (n - 2) + ["head"]
    inner = n - 2
    for i in range(inner):
        out[1 + i] = ("early", "middle", "late")[min(2, i * 3 // inner)] if inner >= 3 else "middle"
    return out


def _activation_values(model: Any, images: np.ndarray, max_per_tensor: int = 200_000,
                       seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(weight name of the layer before it, values) for each activation node on ``images`` (onnxruntime CPU).

    The activation is attributed to the last weight layer before it in graph order, so activation
    panels line up with the weight panels of the same layer group.
    """
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    names, producers, last_weight = [], [], ""
    for node in m.graph.node:
        idx = _WEIGHT_OPS.get(node.op_type)
        if idx is not None and len(node.input) > idx and node.input[idx] in inits:
            last_weight = _weight_key(node, node.input[idx])
        if node.op_type in _ACT_OPS and node.output:
            names.append(node.output[0])
            producers.append(last_weight)
    for out in m.graph.output:  # the model output (logits) stands for the head's activations
        if out.name not in names:
            names.append(out.name)
            producers.append(last_weight)
    existing = {o.name for o in m.graph.output}
    for name in names:  # expose every activation as a graph output so one run returns them all
        if name not in existing:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed_name = sess.get_inputs()[0].name
    outs = sess.run(names, {feed_name: images})
    rng = np.random.default_rng(seed)
    result = []
    for name, arr in zip(producers, outs):
        v = np.asarray(arr, dtype=np.float32).ravel()
        if v.size > max_per_tensor:
            v = rng.choice(v, max_per_tensor, replace=False)
        result.append((name, v))
    return result


def _sample_images(model: Any, n: int) -> tuple[np.ndarray | None, str]:
    """Real evaluation images shaped for the model's input, or None with the reason."""
    from harness.data import datasets
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value for d in dims[1:])
    try:
        split = datasets.load_bundled_sample("test").head(n)
    except Exception as exc:  # the bundled sample is missing: say so on the figure
        return None, f"no evaluation images ({type(exc).__name__}: {exc})"
    imgs = np.asarray(split.images, dtype=np.float32)
    if shape and tuple(imgs.shape[1:]) != shape:
        return None, f"model input {list(shape)} does not match the bundled images {list(imgs.shape[1:])}"
    return imgs, split.source


@dataclass
class CheckpointSpec:
    """A checkpoint file with its recipe label (map / quanttrim / other)."""

    path: Path
    recipe: str
    label: str


def checkpoint_spec(path: str | Path, recipe: str | None = None) -> CheckpointSpec:
    path = Path(path)
    stem = path.name[:-5] if path.name.endswith(".onnx") else path.stem
    recipe = recipe or recipe_from_name(stem) or stem
    return CheckpointSpec(path, recipe, f"{RECIPE_LABELS.get(recipe, recipe)} ({stem})")


def distributions_figure(checkpoints: Sequence[CheckpointSpec], activations: bool = True, n_images: int = 64,
                         bins: int = 121) -> Figure:
    """Log-scale histograms per layer group of weights (top row) and activations (bottom row)."""
    import onnx

    if not checkpoints:
        raise NoPlotData("no checkpoint files to read weights from (pass --checkpoints or a run whose manifest "
                         "lists existing .onnx paths)")
    loaded = []
    for spec in checkpoints:
        if not spec.path.is_file():
            raise NoPlotData(f"checkpoint {spec.path} does not exist")
        loaded.append((spec, onnx.load(str(spec.path))))
    weights = {spec.label: _weight_tensors(m) for spec, m in loaded}
    ref_names = [n for n, _ in weights[loaded[0][0].label]]
    # each checkpoint's own names -> groups (exports of one architecture differ only in names)
    weight_group = {lab: dict(zip([n for n, _ in ws], layer_groups([n for n, _ in ws]))) for lab, ws in weights.items()}
    if not ref_names:
        raise NoPlotData(f"{loaded[0][0].path} has no Conv/Gemm/MatMul weight initializers")
    group_order: list[str] = []
    for g in layer_groups(ref_names):
        if g not in group_order:
            group_order.append(g)
    acts: dict[str, list[tuple[str, np.ndarray]]] = {}
    act_note = ""
    if activations:
        for spec, m in loaded:
            imgs, source = _sample_images(m, n_images)
            if imgs is None:
                act_note = source
                acts = {}
                break
            try:
                acts[spec.label] = _activation_values(m, imgs)
            except Exception as exc:  # onnxruntime missing or the graph cannot run: say why on the figure
                act_note = f"activations not computed ({type(exc).__name__}: {str(exc)[:120]})"
                acts = {}
                break
            act_note = f"activations on {len(imgs)} images from {source}"
    rows = 2 if activations else 1
    ncols = len(group_order)
    import matplotlib

    with matplotlib.rc_context(BASE_RC):
        fig = Figure(figsize=(3.2 * ncols + 2.6, 3.0 * rows), layout="constrained")
        axes = fig.subplots(rows, ncols, squeeze=False)
    palette = iter(PALETTE[2:])
    colours = {spec.label: RECIPE_COLOURS.get(spec.recipe) or next(palette) for spec, _ in loaded}
    styles = ["-", "--", "-.", ":"]
    for col, group in enumerate(group_order):
        _hist_panel(axes[0][col], {lab: _group_values(ws, group) for lab, ws in weights.items()}, colours, styles,
                    f"weights: {group}", "weight value", gid=f"weights|{group}")
    if activations:
        if acts:
            for col, group in enumerate(group_order):
                data = {}
                for lab, a in acts.items():
                    vals = [v for n, v in a if weight_group[lab].get(n, group_order[0]) == group]
                    data[lab] = np.concatenate(vals) if vals else np.array([], np.float32)
                _hist_panel(axes[1][col], data, colours, styles, f"activations: {group}", "activation value",
                            gid=f"activations|{group}")
        else:
            for ax in axes[1]:
                ax.set_visible(False)
            axes[1][0].set_visible(True)
            _say(axes[1][0], act_note or "activations not computed", gid="no-activations")
            axes[1][0].set_xticks([])
            axes[1][0].set_yticks([])
    handles = [Line2D([], [], color=colours[s.label], linestyle=styles[i % len(styles)], label=s.label)
               for i, (s, _) in enumerate(loaded)]
    handles.append(Line2D([], [], linestyle="none", label="label: max|x| / p99|x| (outlier ratio)"))
    fig.legend(handles=handles, loc="outside right upper", frameon=False).set_gid("distribution-legend")
    _title(fig, "Weight and activation distributions per layer group (log-scale counts)")
    if act_note and acts:
        fig.supxlabel(act_note, fontsize=8, color="#555555")
    return fig


def _group_values(ws: Sequence[tuple[str, np.ndarray]], group: str) -> np.ndarray:
    groups = layer_groups([n for n, _ in ws])
    vals = [w.ravel() for (n, w), g in zip(ws, groups) if g == group]
    return np.concatenate(vals) if vals else np.array([], np.float32)


def _hist_panel(ax: Any, data: Mapping[str, np.ndarray], colours: Mapping[str, str], styles: Sequence[str],
                title: str, xlabel: str, gid: str) -> None:
    _style(ax)
    finite = [v[np.isfinite(v)] for v in data.values() if v.size]
    if not finite or not any(f.size for f in finite):
        _say(ax, "no values", gid=f"{gid}|empty")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    lo = min(float(f.min()) for f in finite if f.size)
    hi = max(float(f.max()) for f in finite if f.size)
    if lo < 0 < hi:  # symmetric bins around 0 so both checkpoints share the grid
        m = max(-lo, hi)
        lo, hi = -m, m
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, 122)
    for i, (label, v) in enumerate(data.items()):
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        counts, _ = np.histogram(v, bins=edges)
        a = np.abs(v)
        p99 = float(np.percentile(a, 99))
        ratio = float(a.max() / p99) if p99 > 0 else math.nan
        (line,) = ax.step(edges[:-1], np.maximum(counts, 0.8), where="post", color=colours[label],
                          linestyle=styles[i % len(styles)], linewidth=1.2, label=f"{ratio:.2f}")
        line.set_gid(f"hist|{gid}|{label}")
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(bottom=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count (log)")
    ax.legend(title="max/p99", fontsize=7, title_fontsize=7, frameon=False)


# --- output ----------------------------------------------------------------------------------------------

def save_figure(fig: Figure, out_dir: str | Path, stem: str, formats: Sequence[str] = ("png", "svg"),
                dpi: int = 150) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        fig.savefig(path, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    return paths


def checkpoints_from_store(store: ResultStore) -> list[CheckpointSpec]:
    """The checkpoint files of one model from the runs' manifests (MAP first, then Quant-Trim, then others).

    Layer groups only line up within one architecture, so the first model with both a MAP and a Quant-Trim
    file is taken (else the first model found); pass --checkpoints to choose others.
    """
    from harness.store.reader import checkpoint_recipes_from_manifest, model_from_name

    seen: dict[str, CheckpointSpec] = {}
    for manifest in store.manifests.values():
        cps = manifest.get("checkpoints")
        recipes = checkpoint_recipes_from_manifest(manifest)
        items = cps.items() if isinstance(cps, dict) else []
        for name, facts in items:
            path = Path(facts.get("path") or name) if isinstance(facts, dict) else Path(name)
            if path.suffix == ".onnx" and path.is_file() and str(path.resolve()) not in seen:
                seen[str(path.resolve())] = checkpoint_spec(path, recipes.get(name))
    by_model: dict[str, list[CheckpointSpec]] = {}
    for spec in seen.values():
        stem = spec.path.name[:-5] if spec.path.name.endswith(".onnx") else spec.path.stem
        by_model.setdefault(model_from_name(stem), []).append(spec)
    if not by_model:
        return []
    paired = [m for m, specs in sorted(by_model.items()) if {"map", "quanttrim"} <= {s.recipe for s in specs}]
    model = paired[0] if paired else sorted(by_model)[0]
    order = {"map": 0, "quanttrim": 1}
    return sorted(by_model[model], key=lambda s: (order.get(s.recipe, 2), s.label))


def build_figure(kind: str, store: ResultStore | None, *, metric: str | None = None,
                 training_logs: Sequence[str | Path] = (), checkpoints: Sequence[CheckpointSpec] = (),
                 activations: bool = True) -> Figure:
    """One figure of ``kind`` (see KINDS); NoPlotData says why there is nothing to draw."""
    df = store.records if store is not None else pd.DataFrame()
    if kind in ("power-throughput", "accuracy-throughput", "latency") and store is None:
        raise NoPlotData(f"{kind} needs a result store (pass a run directory)")
    if kind == "power-throughput":
        return power_throughput_figure(df)
    if kind == "accuracy-throughput":
        return accuracy_throughput_figure(df, metric)
    if kind == "latency":
        return latency_figure(df)
    if kind == "training":
        sources = list(training_logs) or ([Path(p) for p in store.manifests] if store is not None else [])
        logs = [read_training_log(p) for p in find_training_logs(sources)]
        if not logs:
            where = ", ".join(map(str, sources)) or "(no paths given)"
            raise NoPlotData(f"no training logs (JSONL lines with an 'epoch' key) under {where}; pass --train-logs "
                             "with the trainer's per-epoch log files or their folder")
        return training_figure(logs)
    if kind == "distributions":
        specs = list(checkpoints) or (checkpoints_from_store(store) if store is not None else [])
        return distributions_figure(specs, activations=activations)
    raise ValueError(f"unknown plot kind {kind!r}; valid: {', '.join(KINDS)}, all")


def make_plots(store: ResultStore | None, kinds: Sequence[str], out_dir: str | Path, *,
               formats: Sequence[str] = ("png", "svg"), **kwargs: Any) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Write each kind's figure; returns (kind -> files written, kind -> reason it was skipped)."""
    written: dict[str, list[Path]] = {}
    skipped: dict[str, str] = {}
    for kind in kinds:
        try:
            fig = build_figure(kind, store, **kwargs)
        except NoPlotData as exc:
            skipped[kind] = str(exc)
            continue
        written[kind] = save_figure(fig, out_dir, kind, formats)
    return written, skipped


__all__ = [
    "CheckpointSpec", "KINDS", "NoPlotData", "TrainingLog", "accuracy_throughput_figure", "build_figure",
    "checkpoint_spec", "checkpoints_from_store", "device_colours", "distributions_figure", "find_training_logs",
    "latency_figure", "layer_groups", "make_plots", "power_throughput_figure", "precision_markers",
    "read_training_log", "save_figure", "training_figure",
]
