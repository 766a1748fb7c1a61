"""Training dynamics from the trainer's per-epoch JSONL logs (paper Figs 4, 5, 8, 10)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.analysis.figures import FigureOptions, register_figure
from harness.analysis.figures.style import PALETTE, RECIPE_COLOURS, RECIPE_LABELS, NoPlotData, _style, _title, \
    new_figure
from harness.store.layout import RECORDS_FILE
from harness.store.reader import ResultStore, recipe_from_name

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
            if c.name == RECORDS_FILE or not c.is_file():
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




@register_figure("training", needs_store=False)
def _training(store: ResultStore | None, options: FigureOptions) -> Figure:
    sources = list(options.training_logs) or ([Path(p) for p in store.manifests] if store is not None else [])
    logs = [read_training_log(p) for p in find_training_logs(sources)]
    if not logs:
        where = ", ".join(map(str, sources)) or "(no paths given)"
        raise NoPlotData(f"no training logs (JSONL lines with an 'epoch' key) under {where}; pass --train-logs "
                         "with the trainer's per-epoch log files or their folder")
    return training_figure(logs)
