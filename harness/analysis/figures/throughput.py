"""Power vs throughput (paper Fig. 3 / 11) and fidelity vs throughput, one panel per model."""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from harness.analysis.figures import FigureOptions, register_figure
from harness.analysis.figures.style import (
    FX_LABEL, METRIC_LABELS, POWER_LABEL, NoPlotData, _auto_log, _encoding_legend, _estimated, _filled, _footnote,
    _label_points, _model_rows, _models, _ok_rows, _say, _style, _title, _wrap, device_colours, new_figure,
    pick_accuracy_metric, precision_markers)
from harness.store.reader import ResultStore

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



# --- accuracy vs throughput ---------------------------------------------------------------------------

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




@register_figure("power-throughput")
def _power_throughput(store: ResultStore, options: FigureOptions) -> Figure:
    return power_throughput_figure(store.records)


@register_figure("accuracy-throughput")
def _accuracy_throughput(store: ResultStore, options: FigureOptions) -> Figure:
    return accuracy_throughput_figure(store.records, options.metric)
