"""Latency distributions: one box per (backend, precision, checkpoint), never pooling MAP and Quant-Trim."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from pathlib import Path

from harness.analysis.figures import FigureOptions, register_figure
from harness.analysis.figures.style import MAX_LATENCY_PANELS, ORIGIN_HATCH, NoPlotData, _auto_log, _filled, \
    _style, _title, device_colours, new_figure, origin_kinds
from harness.store.reader import ResultStore, read_latencies_ms

# --- latency distributions ----------------------------------------------------------------------------

#: One box per configuration: MAP and Quant-Trim (and stand-in / simulated / untuned timings) never share a box.
BOX_KEYS = ("backend", "_precision", "_recipe", "_origin")
RECIPE_SHORT = {"map": "MAP", "quanttrim": "QT"}


def latency_figure(df: pd.DataFrame, max_panels: int = MAX_LATENCY_PANELS) -> Figure:
    """Per (model, device) panel, one box per (backend, precision, checkpoint, timing origin) from the raw files.

    Jobs without a raw file are drawn from their record's percentiles (p50 marker, p50-p99 bar, min-max
    line) and labelled with "*". Boxes timed on a stand-in host, in a simulator or by untuned code are hatched.
    """
    ok = df[(df["status"] == "ok") & df["latency_ms_p50"].notna()] if not df.empty else df
    if ok.empty:
        raise NoPlotData("no successful jobs with latencies to plot")
    colours = device_colours(ok["device"])
    labels_col = ok["precision_label"] if "precision_label" in ok.columns else ok["precision"]
    ok = ok.assign(
        _model=ok["model"].fillna("").replace("", "(unnamed model)"),
        _precision=labels_col.fillna(ok["precision"]).astype(str),
        _recipe=[RECIPE_SHORT.get(str(r), str(c or "")) for r, c in zip(ok["recipe"], ok["checkpoint_name"])],
        _origin=[",".join(origin_kinds(r)) for r in ok.to_dict("records")])
    panels = sorted(ok.groupby(["_model", "device"]).groups.keys())
    dropped = len(panels) - max_panels
    panels = panels[:max_panels]
    fig, axes = new_figure(len(panels), panel_size=(4.4, 3.4), max_cols=3, legend_space=3.0)
    any_raw = any_summary = False
    fills: set[bool] = set()
    hatched: set[str] = set()
    for ax, (model, device) in zip(axes, panels):
        _style(ax)
        sub = ok[(ok["_model"] == model) & (ok["device"] == device)]
        colour = colours[device]
        labels, all_vals = [], []
        for i, ((backend, precision, recipe, origin), g) in enumerate(sub.groupby(list(BOX_KEYS), sort=True)):
            filled = bool(_filled(g).any())
            fills.add(filled)
            kinds = [k for k in origin.split(",") if k]
            hatch = ORIGIN_HATCH[kinds[0]] if kinds else None
            hatched.update(kinds)
            files = [f for f in g["latency_file"].dropna().tolist() if Path(f).is_file()]
            label = "\n".join(x for x in (backend, precision.replace(" per-", "\nper-", 1), recipe) if x)
            tag = f"{backend}|{g['precision'].iloc[0]}|{recipe}|{'filled' if filled else 'unfilled'}"
            if files:
                vals = np.concatenate([read_latencies_ms(f) for f in files])
                bp = ax.boxplot([vals], positions=[i], widths=0.6, whis=(1, 99), showfliers=False,
                                patch_artist=True, manage_ticks=False)
                box = bp["boxes"][0]
                box.set(facecolor=colour if filled else "white", alpha=0.55 if filled else 1.0, edgecolor=colour,
                        linewidth=1.3, hatch=hatch)
                box.set_gid(f"latency-box|{tag}" + (f"|{origin}" if origin else ""))
                for med in bp["medians"]:
                    med.set(color="#222222", linewidth=1.4)
                all_vals.append(vals)
                any_raw = True
            else:
                p50 = float(np.median(g["latency_ms_p50"]))
                p99 = float(np.median(g["latency_ms_p99"])) if g["latency_ms_p99"].notna().any() else p50
                lo = float(np.median(g["latency_ms_min"])) if g["latency_ms_min"].notna().any() else p50
                hi = float(np.median(g["latency_ms_max"])) if g["latency_ms_max"].notna().any() else p99
                ax.vlines(i, lo, hi, color=colour, linewidth=0.8, gid=f"latency-range|{tag}",
                          linestyles="--" if kinds else "-")
                ax.vlines(i, p50, p99, color=colour, linewidth=5, alpha=0.5)
                ax.plot([i], [p50], marker="o", color=colour, markerfacecolor=colour if filled else "white",
                        gid=f"latency-summary|{tag}" + (f"|{origin}" if origin else ""))
                label += "*"
                all_vals.append(np.array([lo, hi]))
                any_summary = True
            labels.append(label)
        widest = max((len(part) for lb in labels for part in lb.split("\n")), default=0)
        if len(labels) > 4 or widest * len(labels) > 44:  # crowded: one slanted line each, never overlapping
            ax.set_xticks(range(len(labels)), [lb.replace("\n", " ") for lb in labels], fontsize=6.5, rotation=35,
                          ha="right", rotation_mode="anchor")
        else:
            ax.set_xticks(range(len(labels)), labels, fontsize=6.5)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylabel("latency per batch (ms)")
        ax.set_title(f"{model} on {device}")
        if all_vals:
            _auto_log(ax, np.concatenate(all_vals), "y", ratio=20.0)
    fig.legend(handles=_legend(colours, fills, hatched, any_raw, any_summary), loc="outside right upper",
               frameon=False).set_gid("encoding-legend")
    title = "Latency per checkpoint (raw per-iteration timings)"
    if dropped > 0:
        title += f"; {dropped} more model/device panel(s) not shown (filter with --filter)"
    _title(fig, title)
    return fig


def _legend(colours: dict[str, str], fills: set[bool], hatched: set[str], any_raw: bool, any_summary: bool
            ) -> list:
    """Only what the figure draws."""
    handles: list = [Patch(facecolor=c, alpha=0.55, edgecolor=c, label=d) for d, c in colours.items()]
    if False in fills:
        handles.append(Patch(facecolor="white", edgecolor="#444444", label="unfilled: not the device's default "
                                                                           "runtime"))
    for kind in ("stand-in", "simulated", "untuned"):
        if kind in hatched:
            what = {"stand-in": "timed on a stand-in host", "simulated": "simulator / emulation timing",
                    "untuned": "untuned code (no autotuning)"}[kind]
            handles.append(Patch(facecolor="white", edgecolor="#444444", hatch=ORIGIN_HATCH[kind], label=what))
    handles.append(Line2D([], [], linestyle="none", label="one box per checkpoint:\n  MAP and QT (Quant-Trim) apart"))
    if any_raw:
        handles.append(Line2D([], [], color="#222222", label="box: p25-p75, median; whiskers: p1-p99"))
    if any_summary:
        handles.append(Line2D([], [], color="#444444", linewidth=5, alpha=0.5,
                              label="* no raw file: p50-p99 bar,\n  min-max line (recorded percentiles)"))
    return handles


@register_figure("latency")
def _latency(store: ResultStore, options: FigureOptions) -> Figure:
    return latency_figure(store.records)
