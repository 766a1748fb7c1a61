"""Shared look of every figure (the paper's Fig. 3 encoding) and small drawing helpers.

colour = device, marker shape = precision, filled marker = the platform's default runtime (the first backend of
the device profile's list that is not a TensorRT route), unfilled = any other runtime. Where a number comes from
matters as much: points timed on a stand-in host, in a simulator, with untuned code, or with estimated power
each get their own style and legend entry (see ``ORIGIN_STYLES``). Legends list only what a figure draws.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter


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
#: Fraction metrics never get a y axis narrower than this (5 percentage points): a 0.4-point spread must look
#: small, not like a cliff.
MIN_FRACTION_SPAN = 0.05
FRACTION_METRICS = ("top1", "top5", "top1_agreement", "miou")
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


#: How a point's provenance is drawn: a ring around the marker, one shape and dash per kind. Every view marks
#: a timing that is not the device's own (harness.store.labels.timing_origin) and untuned code.
ORIGIN_STYLES = {
    "stand-in": dict(marker="o", linestyle="--", label="dashed ring: timed on a stand-in host, not on the device"),
    "simulated": dict(marker="s", linestyle=":", label="dotted square: simulator / emulation timing"),
    "untuned": dict(marker="D", linestyle="-.", label="dash-dot diamond: untuned code (no autotuning)"),
}
ORIGIN_HATCH = {"stand-in": "//", "simulated": "..", "untuned": "xx"}


def origin_kinds(row: Mapping[str, Any]) -> list[str]:
    """The ORIGIN_STYLES kinds that apply to one record/point ("stand-in", "simulated", "untuned")."""
    kinds = []
    origin = row.get("timing_origin")
    if origin in ("stand-in", "simulated"):
        kinds.append(str(origin))
    if row.get("untuned") is True or row.get("untuned") == "True":
        kinds.append("untuned")
    return kinds


def mark_origins(ax: Any, rows: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> set[str]:
    """Draw a ring around every point that is not timed on the device by tuned code; returns the kinds drawn."""
    drawn: set[str] = set()
    records = rows.to_dict("records")
    for kind, st in ORIGIN_STYLES.items():
        sel = [i for i, r in enumerate(records) if kind in origin_kinds(r) and np.isfinite(x[i]) and np.isfinite(y[i])]
        if not sel:
            continue
        size = {"stand-in": 300, "simulated": 340, "untuned": 420}[kind]
        ax.scatter(x[sel], y[sel], s=size, marker=st["marker"], facecolors="none", edgecolors="#333333",
                   linewidths=1.1, linestyles=st["linestyle"], zorder=2, gid=f"origin|{kind}")
        drawn.add(kind)
    return drawn


def origin_handles(drawn: Iterable[str]) -> list[Any]:
    """Legend entries for the provenance rings actually drawn."""
    drawn = set(drawn)
    return [Line2D([], [], marker=st["marker"], linestyle="none", markersize=11, markerfacecolor="none",
                   markeredgecolor="#333333", label=st["label"]) for k, st in ORIGIN_STYLES.items() if k in drawn]


def _encoding_legend(fig: Figure, colours: Mapping[str, str], markers: Mapping[str, str], *,
                     fills: Iterable[bool] = (), estimated: bool = False, extra: Sequence[Any] = ()) -> Any:
    """The legend of the encoding, listing only what the figure draws (``fills``: the fill states drawn)."""
    fills = set(fills)
    handles: list[Any] = [Line2D([], [], linestyle="none", label="colour = device")]
    handles += [Line2D([], [], marker="o", linestyle="none", color=c, markersize=7, label=d) for d, c in colours.items()]
    handles.append(Line2D([], [], linestyle="none", label="marker = precision"))
    handles += [Line2D([], [], marker=m, linestyle="none", color="#444444", markersize=7, label=p)
                for p, m in markers.items()]
    if len(fills) > 1:  # one fill state says nothing: the legend names the runtime split only when both appear
        handles.append(Line2D([], [], linestyle="none", label="fill = runtime"))
        handles.append(Line2D([], [], marker="o", linestyle="none", color="#444444", markersize=7,
                              label="filled: device's default runtime"))
        handles.append(Line2D([], [], marker="o", linestyle="none", color="#444444", markerfacecolor="none",
                              markersize=7, label="unfilled: other runtime (e.g. TensorRT)"))
    elif fills == {False}:
        handles.append(Line2D([], [], marker="o", linestyle="none", color="#444444", markerfacecolor="none",
                              markersize=7, label="unfilled: not the device's default runtime"))
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


def _label_points(ax: Any, rows: pd.DataFrame, x: np.ndarray, y: np.ndarray, extra: Sequence[Any] = ()) -> None:
    """Name the backend beside each point when there are few enough to read (once per device/precision).

    Labels (and ``extra`` texts already on the axes) are moved apart with adjustText when it is installed
    (the ``analysis`` extra), so they neither overlap each other nor sit on a marker.
    """
    spots = rows[["backend", "device", "precision"]].drop_duplicates()
    texts = list(extra)
    if len(spots) <= MAX_LABELLED_POINTS:
        done: set[tuple[str, str, str]] = set()
        for xi, yi, backend, device, precision in zip(x, y, rows["backend"].astype(str), rows["device"].astype(str),
                                                      rows["precision"].astype(str)):
            if not (np.isfinite(xi) and np.isfinite(yi)):
                continue
            spot = (backend, device, precision)
            if spot in done:
                continue
            done.add(spot)
            texts.append(ax.text(xi, yi, " " + backend, fontsize=6.5, color="#555555", gid="backend-label",
                                 ha="left", va="bottom"))
    finite = np.isfinite(x) & np.isfinite(y)
    # placed once the figure's layout is final (see place_labels): positions depend on the axes' final size
    ax._harness_labels = (texts, x[finite], y[finite])


def place_labels(fig: Figure) -> None:
    """Move every panel's labels apart (adjustText, the ``analysis`` extra) after the layout is settled, then
    freeze the layout so saving does not move the axes under the placed labels. Without adjustText the labels
    stay beside their points."""
    panels = [(ax, ax._harness_labels) for ax in fig.axes if getattr(ax, "_harness_labels", None)]
    if not any(len(texts) > 1 for _, (texts, _x, _y) in panels):
        return
    try:
        from adjustText import adjust_text
    except ImportError:
        return
    fig.draw_without_rendering()
    for ax, (texts, x, y) in panels:
        if len(texts) > 1:
            adjust_text(texts, x=x, y=y, ax=ax, expand=(1.3, 1.8), force_text=(0.4, 0.8),
                        force_static=(0.3, 0.6), ensure_inside_axes=True, iter_lim=500,
                        arrowprops=dict(arrowstyle="-", color="#999999", lw=0.5))
            _separate(ax, texts)
    fig.set_layout_engine("none")


def _separate(ax: Any, texts: Sequence[Any]) -> None:
    """A last pass: any label still overlapping another moves up by its own height until it is clear
    (adjustText can leave two labels of coincident points on top of each other)."""
    renderer = ax.figure._get_renderer()
    placed: list[Any] = []
    for text in sorted(texts, key=lambda t: t.get_window_extent(renderer).y0):
        for _ in range(20):
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(p) for p in placed):
                break
            x, y = ax.transData.transform(text.get_position())
            text.set_position(ax.transData.inverted().transform((x, y + box.height + 1.0)))
        placed.append(text.get_window_extent(renderer))


def _wrap(text: str, width: int = 60, lines: int = 4) -> str:
    import textwrap

    parts = textwrap.wrap(str(text), width)
    return "\n".join(parts[:lines]) + (" \u2026" if len(parts) > lines else "")




def pick_accuracy_metric(df: pd.DataFrame) -> str:
    for m in ACCURACY_METRICS:
        if m in df.columns and df[m].notna().any():
            return m
    raise NoPlotData("no fidelity metric measured (looked for " + ", ".join(ACCURACY_METRICS) + ")")


def min_span(ax: Any, span: float, bounds: tuple[float, float] = (-math.inf, math.inf)) -> None:
    """Widen a linear y axis to at least ``span`` around its centre, kept inside ``bounds`` (0..1 for fractions),
    so an axis is never zoomed in on noise."""
    if ax.get_yscale() != "linear":
        return
    lo, hi = ax.get_ylim()
    if hi - lo >= span:
        return
    mid = (lo + hi) / 2
    lo, hi = mid - span / 2, mid + span / 2
    if hi > bounds[1]:
        lo, hi = bounds[1] - span, bounds[1]
    if lo < bounds[0]:
        lo, hi = bounds[0], bounds[0] + span
    ax.set_ylim(lo, hi)
