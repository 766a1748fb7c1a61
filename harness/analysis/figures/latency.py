"""Latency distributions: one box per (backend, precision, checkpoint), never pooling MAP and Quant-Trim."""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter
from pathlib import Path

from harness.analysis.figures import FigureOptions, register_figure
from harness.analysis.figures.style import MAX_LATENCY_PANELS, NoPlotData, _auto_log, _filled, _style, _title, \
    device_colours, new_figure
from harness.store.reader import ResultStore, read_latencies_ms

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




@register_figure("latency")
def _latency(store: ResultStore, options: FigureOptions) -> Figure:
    return latency_figure(store.records)
