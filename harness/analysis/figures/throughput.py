"""Power vs throughput (paper Fig. 3 / 11) and fidelity vs throughput, one panel per model."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from devices.choices import unknown_name
from harness.analysis.figures import FigureOptions, register_figure
from harness.analysis.figures.style import (
    FRACTION_METRICS, FX_LABEL, MAX_LABELLED_POINTS, METRIC_LABELS, MIN_FRACTION_SPAN, POWER_LABEL, NoPlotData, _auto_log,
    _encoding_legend, _estimated, _filled, _footnote, _label_points, _model_rows, _models, _ok_rows, _say, _style,
    _title, _wrap, device_colours, mark_origins, min_span, new_figure, origin_handles, place_labels, pick_accuracy_metric,
    precision_markers)
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
    fills: set[bool] = set()
    origins: set[str] = set()
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
            fills.add(bool(filled))
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
        origins |= mark_origins(ax, pts, pts["fps"].to_numpy(float), pts["_y"].to_numpy(float))
        _auto_log(ax, pts["fps"].to_numpy(float), "x")
        _auto_log(ax, pts["_y"].to_numpy(float), "y")
        _label_points(ax, pts, pts["fps"].to_numpy(float), pts["_y"].to_numpy(float))
        missing = sub[~has]
        if len(missing):
            reasons = sorted({str(r) for r in missing["power_unavailable_reason"].dropna()})
            _footnote(ax, f"{len(missing)} job(s) without power, not drawn" + (f": {_wrap(reasons[0], 70)}"
                                                                               if reasons else ""), gid="no-power-note")
        stand_in = _stand_in(sub[has])
        if stand_in:
            ax.set_title(f"{model}\n({stand_in} point(s) timed on a stand-in host)", fontsize=9)
    whisker = [Line2D([], [], color="#444444", marker="_", linestyle="-", linewidth=0.9,
                      label="whiskers: p5-p95 power")]
    _encoding_legend(fig, colours, markers, fills=fills, estimated=any_estimated,
                     extra=whisker + origin_handles(origins))
    _title(fig, "Power vs throughput (batch 1)")
    place_labels(fig)
    return fig


#: One point per configuration: repeated runs and seeds of the same job collapse to one marker.
#: Stand-in, simulated and untuned timings are their own points, never pooled with the device's own.
CONFIG_KEYS = ("device", "backend", "precision", "calibration_method", "recipe", "checkpoint_name", "_filled",
               "timing_origin", "untuned")


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
    return out.replace({"calibration_method": {"": None}, "recipe": {"": None}, "timing_origin": {"": None}})


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
        raise NoPlotData(unknown_name("metric", metric, METRIC_LABELS))
    ok = ok[ok[metric].notna()]
    if ok.empty:
        raise NoPlotData(f"no successful job measured {metric}")
    colours = device_colours(ok["device"])
    markers = precision_markers(ok["precision"])
    models = _models(ok)
    fig, axes = new_figure(len(models))
    arrows = 0
    fills: set[bool] = set()
    origins: set[str] = set()
    any_ci = False
    for ax, model in zip(axes, models):
        _style(ax)
        raw = _model_rows(ok, model)
        sub = _per_config(raw.assign(_filled=lambda d: _filled(d)), {metric: "median", "eval_samples": "median"})
        for (device, precision, filled), g in sub.groupby(["device", "precision", "_filled"], sort=True):
            fills.add(bool(filled))
            colour = colours[device]
            x, y = g["fps"].to_numpy(float), g[metric].to_numpy(float)
            yerr = _proportion_errors(y, g["eval_samples"].to_numpy(float)) if metric in FRACTION_METRICS else None
            line, _caps, bars = ax.errorbar(
                x, y, yerr=yerr, fmt=markers[precision], linestyle="none", color=colour,
                markerfacecolor=colour if filled else "none", markeredgecolor=colour, markersize=8,
                markeredgewidth=1.4, capsize=3, elinewidth=0.9, zorder=3)
            line.set_gid(f"point|{device}|{precision}|{'filled' if filled else 'unfilled'}")
            for b in bars:
                b.set_gid(f"ci|{device}|{precision}")
            any_ci |= yerr is not None
        n_arrows, delta_texts = _recipe_arrows(ax, sub, raw, metric)
        arrows += n_arrows
        origins |= mark_origins(ax, sub, sub["fps"].to_numpy(float), sub[metric].to_numpy(float))
        ax.set_title(model)
        ax.set_xlabel(FX_LABEL)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        _auto_log(ax, sub["fps"].to_numpy(float), "x")
        if metric == "logit_mse":
            _auto_log(ax, sub[metric].to_numpy(float), "y", ratio=10.0)
        if metric in FRACTION_METRICS:
            min_span(ax, MIN_FRACTION_SPAN, bounds=(0.0, 1.0))
        _label_points(ax, sub, sub["fps"].to_numpy(float), sub[metric].to_numpy(float), extra=delta_texts)
    extra = [Line2D([], [], color="#333333", marker=r"$\rightarrow$", linestyle="-", linewidth=0.9,
                    label="MAP \u2192 Quant-Trim (same job);\n  \u0394 [95% CI, where per-image\n  data exists]")] if arrows else []
    if any_ci:
        extra.append(Line2D([], [], color="#444444", marker="|", linestyle="-", linewidth=0.9,
                            label="error bar: 95% CI over the\n  evaluation images (Wilson)"))
    _encoding_legend(fig, colours, markers, fills=fills, extra=extra + origin_handles(origins))
    _title(fig, f"{METRIC_LABELS.get(metric, metric)} vs throughput")
    place_labels(fig)
    return fig


def _proportion_errors(y: np.ndarray, n: np.ndarray) -> np.ndarray | None:
    """[2, k] error-bar lengths from each point's Wilson interval; None when no point has one (no scipy or n)."""
    from harness.analysis.uncertainty import proportion_ci

    lo, hi = np.full(len(y), np.nan), np.full(len(y), np.nan)
    for i, (v, k) in enumerate(zip(y, n)):
        ci = proportion_ci(float(v), float(k))
        if ci is not None:
            lo[i], hi[i] = max(v - ci[0], 0.0), max(ci[1] - v, 0.0)
    return None if np.isnan(lo).all() else np.vstack([lo, hi])


def _recipe_arrows(ax: Any, sub: pd.DataFrame, raw: pd.DataFrame, metric: str, limit: int = 200
                   ) -> tuple[int, list[Any]]:
    """An arrow from each MAP point to the Quant-Trim point of the same job, with the difference and its CI."""
    from harness.analysis.uncertainty import SAMPLE_KEYS, recipe_delta_ci

    keys = ["device", "backend", "precision", "calibration_method"]
    pairs = sub[sub["recipe"].isin(["map", "quanttrim"])]
    if pairs.empty:
        return 0, []
    keyed = pairs.assign(calibration_method=pairs["calibration_method"].fillna(""))
    med = keyed.groupby(keys + ["recipe"])[["fps", metric]].median()
    raw_keyed = raw.assign(calibration_method=raw["calibration_method"].fillna(""))
    files = raw_keyed.groupby(keys + ["recipe"])["samples_file"].agg(list) if "samples_file" in raw else None
    n, texts = 0, []
    groups = list(keyed.groupby(keys))
    label = len(groups) <= MAX_LABELLED_POINTS  # beyond that the numbers would only cover each other
    for key, _ in groups:
        if (*key, "map") in med.index and (*key, "quanttrim") in med.index and n < limit:
            a, b = med.loc[(*key, "map")], med.loc[(*key, "quanttrim")]
            ann = ax.annotate("", xy=(b["fps"], b[metric]), xytext=(a["fps"], a[metric]),
                              arrowprops=dict(arrowstyle="->", color="#333333", lw=0.9, shrinkA=4, shrinkB=4))
            ann.set_gid(f"recipe-arrow|{key[0]}|{key[1]}|{key[2]}")
            n += 1
            if label and metric in SAMPLE_KEYS and files is not None:
                ci = recipe_delta_ci(files.get((*key, "map"), [None]), files.get((*key, "quanttrim"), [None]),
                                     metric, float(b[metric] - a[metric]))
                text = f"\u0394 {100 * ci.delta:+.1f} pt" + (
                    f" [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}]" if ci.has_interval else "")
                texts.append(ax.text(b["fps"], b[metric], text, fontsize=6.5, color="#333333",
                                     gid=f"recipe-delta|{key[0]}|{key[1]}|{key[2]}"))
    return n, texts


@register_figure("power-throughput")
def _power_throughput(store: ResultStore, options: FigureOptions) -> Figure:
    return power_throughput_figure(store.records)


@register_figure("accuracy-throughput")
def _accuracy_throughput(store: ResultStore, options: FigureOptions) -> Figure:
    return accuracy_throughput_figure(store.records, options.metric)
