"""The reproduction's figures, written as PNG beside report.md (matplotlib through the harness figure style).

* ``fidelity_scatter.png`` (paper Fig. 3's encoding: colour = device, marker = precision, filled = a real or
  simulated backend, unfilled = an emulated policy): per deployment, MAP's logit MSE (x) against Quant-Trim's (y),
  mean over seeds × draws with ±1 std whiskers (cut at the panel's edge where mean − std ≤ 0); below the diagonal
  Quant-Trim is closer to its FP32 reference.
  The reproduction measures fidelity only (no timing, no power), so the axes are the two checkpoints' error,
  not the paper's FPS and watts.
* ``deltas.png``: Quant-Trim − MAP logit MSE per deployment as a percentage of MAP's mean, with the paired 95 %
  bootstrap interval of ``tables.deltas`` (left of 0: Quant-Trim better).
* ``training.png`` (paper Fig. 8): validation accuracy and loss per epoch per recipe over seeds, from the
  trainer's logs under ``train/`` (``harness.analysis.figures.training``; band = min–max over seeds).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from harness.analysis.figures import save_figures
from harness.analysis.figures.style import NoPlotData, _encoding_legend, _style, _title, device_colours, new_figure, \
    precision_markers

FIGURES = ("fidelity_scatter", "deltas", "training")
_RUN_DIR = re.compile(r"^(?P<model>.+?-w[0-9.]+)-(?P<recipe>.+)-s(?P<seed>\d+)$")


def _panels(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(model, granularity, arm) panels, Quant-Trim's first."""
    keys = {(str(m), str(g), str(a)) for m, g, a in zip(df["model"], df["granularity"], df["arm"])}
    return sorted(keys, key=lambda k: (k[0], k[1], k[2] != "quanttrim", k[2]))


def _arm_label(arm: str) -> str:
    return "Quant-Trim" if arm == "quanttrim" else arm


def _log_whisker(mean: float, std: float, floor: float) -> list[list[float]]:
    """[[below], [above]] ±std whiskers for a log axis: a whisker reaching 0 or less (std ≥ mean, common for logit
    MSE over seeds) is cut at ``floor`` (the panel's lower edge), since log(≤ 0) would draw it across the panel."""
    std = float(np.nan_to_num(std))
    return [[min(std, max(mean - floor, 0.0))], [std]]


def fidelity_scatter_figure(cells: pd.DataFrame, metric: str = "logit_mse") -> Figure:
    """Baseline (x) vs each arm (y) per deployment from ``tables.cells`` output; one panel per (model, granularity,
    arm). The baseline is MAP (role ``map``; the FP32 row for the ablation preset).

    Raises:
        NoPlotData: no cell has the baseline and an arm with a positive mean (log axes).
    """
    key = ["model", "granularity", "device", "backend", "precision"]
    cols = {f"{metric}_mean": "m", f"{metric}_std": "s"}
    base = cells[cells["role"] == "map"][key + list(cols)].rename(columns={k: "x" + v for k, v in cols.items()})
    arm_rows = cells[~cells["role"].isin(["map", ""])][key + ["role"] + list(cols)]
    arm_rows = arm_rows.rename(columns={"role": "arm", **{k: "y" + v for k, v in cols.items()}})
    flat = arm_rows.merge(base, on=key, how="inner")
    flat = flat[(flat["xm"] > 0) & (flat["ym"] > 0)]
    if flat.empty:
        raise NoPlotData(f"no deployment has a positive {metric} for the baseline and an arm (log axes)")
    colours, markers = device_colours(flat["device"]), precision_markers(flat["precision"])
    panels = _panels(flat)
    fig, axes = new_figure(len(panels), panel_size=(4.8, 4.4))
    fills: set[bool] = set()
    for ax, (model, gran, arm) in zip(axes, panels):
        _style(ax)
        sub = flat[(flat["model"] == model) & (flat["granularity"] == gran) & (flat["arm"] == arm)]
        lo = float(min(sub["xm"].min(), sub["ym"].min())) / 2
        hi = float(max(sub["xm"].max(), sub["ym"].max())) * 2
        for r in sub.itertuples(index=False):
            filled = r.backend != "emulated"
            fills.add(filled)
            ax.errorbar(r.xm, r.ym, xerr=_log_whisker(r.xm, r.xs, lo), yerr=_log_whisker(r.ym, r.ys, lo),
                        fmt=markers[r.precision], color=colours[r.device],
                        markerfacecolor=colours[r.device] if filled else "none",
                        markersize=7, elinewidth=0.8, capsize=2, gid=f"cell|{arm}|{r.device}|{r.backend}|{r.precision}")
        ax.plot([lo, hi], [lo, hi], linestyle="--", color="#888888", linewidth=0.9, gid="diagonal")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):   # under a decade matplotlib labels the minor ticks too, overprinting
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(f"{model}, {gran.replace('_', '-')} request")
        baseline = "MAP" if arm == "quanttrim" else "the FP32 row"
        ax.set_xlabel(f"baseline ({baseline}) {metric.replace('_', ' ')}, mean ± std over seeds × draws")
        ax.set_ylabel(f"{_arm_label(arm)} {metric.replace('_', ' ')}")
        ax.text(0.97, 0.03, f"below the diagonal: {_arm_label(arm)} closer to FP32", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color="#555555")
    extra = [Line2D([], [], linestyle="none", label="fill = backend"),
             Line2D([], [], marker="o", linestyle="none", color="#444444", label="filled: real / simulator"),
             Line2D([], [], marker="o", linestyle="none", color="#444444", markerfacecolor="none",
                    label="unfilled: emulated policy")] if len(fills) > 1 else []
    _encoding_legend(fig, colours, markers, extra=extra)
    _title(fig, "Error against each checkpoint's own FP32 reference, per deployment: baseline vs arm")
    return fig


def deltas_figure(deltas: pd.DataFrame, cells: pd.DataFrame, metric: str = "logit_mse") -> Figure:
    """Forest plot of arm − baseline (Quant-Trim − MAP) per deployment, as % of the baseline's mean, with the
    paired 95 % bootstrap CI; one panel per (model, granularity, arm).

    ``deltas`` is ``tables.deltas`` output (with ``{metric}_ci_low/_high``), ``cells`` is ``tables.cells``.

    Raises:
        NoPlotData: no deployment has a delta and a nonzero MAP mean.
    """
    key = ["model", "granularity", "device", "backend", "precision"]
    base = cells[cells["role"] == "map"][key + [f"{metric}_mean"]].rename(columns={f"{metric}_mean": "map_mean"})
    d = deltas.merge(base, on=key, how="inner")
    d = d[d[f"{metric}_delta"].notna() & (d["map_mean"].abs() > 0)]
    if d.empty:
        raise NoPlotData(f"no deployment has a Quant-Trim − MAP {metric} and a nonzero MAP mean")
    panels = _panels(d)
    heights = max(len(d[(d["model"] == m) & (d["granularity"] == g) & (d["arm"] == a)]) for m, g, a in panels)
    fig, axes = new_figure(len(panels), panel_size=(5.6, max(2.4, 0.32 * heights + 1.2)), max_cols=2,
                           legend_space=0.8)
    for ax, (model, gran, arm) in zip(axes, panels):
        _style(ax)
        sub = d[(d["model"] == model) & (d["granularity"] == gran) & (d["arm"] == arm)]
        sub = sub.sort_values(["device", "backend", "precision"])
        scale = 100.0 / sub["map_mean"].to_numpy(float)
        mid = sub[f"{metric}_delta"].to_numpy(float) * scale
        lo = sub.get(f"{metric}_ci_low", pd.Series(np.nan, index=sub.index)).to_numpy(float) * scale
        hi = sub.get(f"{metric}_ci_high", pd.Series(np.nan, index=sub.index)).to_numpy(float) * scale
        y = np.arange(len(sub))[::-1]
        colours = np.where(hi < 0, "#009E73", np.where(lo > 0, "#D55E00", "#555555"))
        for yi, m, l, h, c in zip(y, mid, lo, hi, colours):
            ax.errorbar(m, yi, xerr=[[m - l], [h - m]] if np.isfinite(l) and np.isfinite(h) else None, fmt="o",
                        color=c, capsize=2, elinewidth=1.0, gid="delta")
        ax.axvline(0, color="#888888", linestyle="--", linewidth=0.9)
        ax.set_yticks(y, [f"{r.device} / {r.backend} / {r.precision}" for r in sub.itertuples(index=False)])
        ax.set_xlabel(f"{_arm_label(arm)} − MAP {metric.replace('_', ' ')}, % of MAP mean (95 % CI)")
        ax.set_title(f"{model}, {gran.replace('_', '-')} request, {_arm_label(arm)}")
    _title(fig, "Arm − baseline per deployment (green: arm better with 95 % confidence; red: worse)")
    return fig


def training_dynamics_figure(train_dir: Path) -> Figure:
    """Paper Fig. 8 analog from the trainer's per-epoch logs under ``train_dir`` (one folder per run)."""
    from harness.analysis.figures.training import find_training_logs, read_training_log, training_figure

    logs = [read_training_log(p) for p in find_training_logs([train_dir])] if Path(train_dir).is_dir() else []
    models = set()
    for log in logs:  # run folders are <model>-w<width>-<recipe>-s<seed> (pipeline.train_and_export)
        m = _RUN_DIR.match(Path(log.path).parent.name)
        if m:
            log.recipe, log.seed = m.group("recipe"), m.group("seed")
            models.add(m.group("model"))
    if len(models) > 1:  # one line per model and recipe, not recipes averaged across architectures
        for log in logs:
            m = _RUN_DIR.match(Path(log.path).parent.name)
            if m:
                log.recipe = f"{m.group('model')} {m.group('recipe')}"
    if not logs:
        raise NoPlotData(f"no trainer logs (log.jsonl with an 'epoch' key) under {train_dir}")
    return training_figure(logs)


def write_figures(cells: pd.DataFrame, deltas: pd.DataFrame, out: Path, train_dir: Path | None = None
                  ) -> tuple[dict[str, Path], dict[str, str]]:
    """Every figure as ``out/<name>.png``; returns (name -> file, name -> why it was not drawn)."""
    builders: dict[str, Callable[[], Figure]] = {
        "fidelity_scatter": lambda: fidelity_scatter_figure(cells),
        "deltas": lambda: deltas_figure(deltas, cells),
        "training": lambda: training_dynamics_figure(train_dir if train_dir is not None else out / "train"),
    }
    written, skipped = save_figures(builders, out, formats=("png",))
    return {name: files[0] for name, files in written.items()}, skipped
