"""Aggregate the reproduction's rows: mean ± std per cell, Quant-Trim − MAP with a bootstrap CI, spreads.

Every cell is over seeds × calibration draws (n is printed beside it); the difference is paired (same model,
seed, draw, granularity, device, backend, precision) and its 95 % interval is a percentile bootstrap over those
pairs (scipy.stats.bootstrap), so one lucky seed cannot make a claim.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

METRICS = ("top1", "top1_agreement", "logit_mse", "snr_db", "ece", "brier")
CELL = ["model", "granularity", "device", "backend", "precision"]
PAIR = ["model", "seed", "calib_draw", *CELL[1:]]


def load_rows(path: Path, study: dict[str, Any] | None = None) -> pd.DataFrame:
    """The ok, non-FP32 rows of ``path``; with ``study`` (a config.json dict) only its seeds, calibration draws and
    granularities: an output folder may hold rows of an earlier, differently configured run.

    ``study_granularity`` is the granularity the study requested; ``granularity`` is what each row deployed
    (``applied_granularity``): an emulated device policy keeps its own, floating-point precisions have none
    (``float``). Cells and deltas group by the deployed one; spreads by the study's."""
    df = pd.read_csv(path)
    df = df[df["status"] == "ok"].copy()
    for col, key in (("seed", "seeds"), ("calib_draw", "calib_draws"), ("granularity", "granularities")):
        if study and study.get(key) is not None:
            df = df[df[col].isin(list(study[key]))]
    for m in METRICS:
        df[m] = pd.to_numeric(df[m], errors="coerce").replace([np.inf, -np.inf], np.nan)
    df = df[df["precision"] != "fp32"].copy()
    df["study_granularity"] = df["granularity"]
    df["granularity"] = [applied_granularity(r) for r in df.to_dict("records")]
    return df


def applied_granularity(row: dict[str, Any]) -> str:
    """The weight granularity a row deployed: the fidelity row's ``weight_granularity`` (the harness records what
    was applied); for rows written before it existed, an emulated policy's own granularity from its device profile
    (the emulator always applies the policy's), else the study's request. ``float`` for precisions without integer
    weights."""
    from devices.numerics import is_integer_precision

    if not is_integer_precision(str(row["precision"])):
        return "float"
    applied = row.get("weight_granularity")
    if isinstance(applied, str) and applied:
        return applied
    if row.get("backend") == "emulated":
        policy = _profile_policy(str(row["device"]), str(row["precision"]))
        if policy is not None:
            return policy
    return str(row["granularity"])


def _profile_policy(device: str, precision: str) -> str | None:
    from devices.loader import load_device

    try:
        profile = load_device(device)
    except (KeyError, FileNotFoundError, ValueError):
        return None
    policy = next((q for q in profile.quant_policies if q.name == precision), None)
    return policy.weight_granularity if policy else None


def deployed(df: pd.DataFrame) -> pd.DataFrame:
    """One row per deployment: the same emulated policy measured in a per-tensor and a per-channel study (it
    applies its own granularity both times, with the same calibration draw) counts once."""
    return df.drop_duplicates(subset=["model", "role", "seed", "calib_draw", *CELL], keep="first")


def cells(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and n of every metric per (cell, role): the Table 1–3 analogs."""
    g = deployed(df).groupby([*CELL, "role"], dropna=False)[list(METRICS)]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std")).join(g.size().rename("n"))
    return out.reset_index()


def bootstrap_ci(values: np.ndarray, confidence: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean; None with fewer than 2 values or without scipy."""
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    try:
        from scipy.stats import bootstrap
    except ImportError:
        return None
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    res = bootstrap((values,), np.mean, confidence_level=confidence, method="percentile",
                    random_state=np.random.default_rng(seed), n_resamples=2000)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def arms(df: pd.DataFrame) -> list[str]:
    """The roles compared with the baseline (``map``): ``quanttrim`` first, then the ablation arms by name."""
    roles = sorted({str(r) for r in df["role"].dropna()} - {"map", ""})
    return sorted(roles, key=lambda r: (r != "quanttrim", r))


def deltas(df: pd.DataFrame) -> pd.DataFrame:
    """Arm − baseline per cell and arm (Quant-Trim − MAP; for the ablation preset each Table 9 row − the FP32 row),
    paired by seed and draw: mean, 95 % CI (text and numeric bounds), and in how many pairs the arm is better
    (``*_qt_better``)."""
    wide = deployed(df).pivot_table(index=PAIR, columns="role", values=list(METRICS), aggfunc="first")
    rows = []
    for arm in arms(df):
        for cell, grp in wide.groupby(level=[PAIR.index(c) for c in CELL]):
            row: dict[str, Any] = {**dict(zip(CELL, cell)), "arm": arm}
            for m in METRICS:
                if (m, arm) not in grp or (m, "map") not in grp:
                    continue
                d = (grp[(m, arm)] - grp[(m, "map")]).to_numpy(dtype=float)
                d = d[np.isfinite(d)]
                if not len(d):
                    continue
                row[f"{m}_delta"] = float(d.mean())
                ci = bootstrap_ci(d)
                row[f"{m}_ci"] = f"[{ci[0]:+.4g}, {ci[1]:+.4g}]" if ci else "n<2"
                row[f"{m}_ci_low"], row[f"{m}_ci_high"] = ci if ci else (None, None)
                better = d < 0 if m in ("logit_mse", "ece", "brier") else d > 0
                row[f"{m}_qt_better"] = f"{int(better.sum())}/{len(d)}"
            if any(k.endswith("_delta") for k in row):
                row["pairs"] = len(grp)
                rows.append(row)
    return pd.DataFrame(rows)


def spreads(df: pd.DataFrame) -> pd.DataFrame:
    """Cross-backend spread (max − min over the device/backend/precision rows) per checkpoint, seed and draw, then
    mean ± std over seeds × draws: the paper's cross-backend consistency.

    Only deployments every role of the study ran (status ok) count, so the roles are compared over the same set: a
    deployment one checkpoint could not run (e.g. LiteRT INT8 refusing the Quant-Trim export's Clip) leaves both
    out. ``deployments`` is how many were compared (mean over seeds × draws)."""
    study = ["model", "study_granularity", "seed", "calib_draw"]
    deployment = ["device", "backend", "precision", "granularity"]
    roles = df.groupby(study)["role"].transform("nunique")
    common = df[df.groupby(study + deployment)["role"].transform("nunique") == roles]
    per = common.groupby(study[:2] + ["role"] + study[2:]).agg(
        top1_spread=("top1", lambda s: s.max() - s.min()), logit_mse_spread=("logit_mse", lambda s: s.max() - s.min()),
        deployments=("precision", "size"))
    g = per.groupby(level=["model", "study_granularity", "role"])
    out = g[["top1_spread", "logit_mse_spread"]]
    return (out.mean().add_suffix("_mean").join(out.std(ddof=1).add_suffix("_std"))
            .join(g["deployments"].mean()).join(g.size().rename("n")).reset_index())


#: An exported FP32 checkpoint scoring this far (top-1, fraction) below its trainer's last validation accuracy is
#: flagged: the trainer validates on a held-out split, the reproduction on test images, so a few points apart is
#: normal; a gap this size means the export does not compute what was trained.
EXPORT_GAP_FLAG = 0.05


def fp32_checkpoints(rows_path: Path, train_dir: Path) -> pd.DataFrame:
    """Per checkpoint: its FP32 top-1 as the reproduction measured it (ONNX Runtime, the reference) beside the
    trainer's last logged validation accuracy (``<train_dir>/<checkpoint>/log.jsonl``; NaN when absent) and
    ``export_gap`` = trainer − exported, flagged above :data:`EXPORT_GAP_FLAG`."""
    import json

    df = pd.read_csv(rows_path)
    ref = df[(df["status"] == "ok") & (df["precision"] == "fp32") & (df["backend"] == "onnxruntime")]
    ref = ref.drop_duplicates(subset=["checkpoint"])[["model", "role", "seed", "checkpoint", "top1"]].copy()
    ref["top1"] = pd.to_numeric(ref["top1"], errors="coerce")
    trainer = []
    for ckpt in ref["checkpoint"]:
        log = Path(train_dir) / str(ckpt) / "log.jsonl"
        epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
        accs = [e["val_acc"] for e in epochs if "val_acc" in e]
        trainer.append(float(accs[-1]) if accs else float("nan"))
    ref["trainer_val_acc"] = trainer
    ref["export_gap"] = ref["trainer_val_acc"] - ref["top1"]
    ref["flagged"] = ref["export_gap"] > EXPORT_GAP_FLAG
    return ref.sort_values(["model", "role", "seed"]).reset_index(drop=True)


def _export_section(ckpts: pd.DataFrame) -> str:
    bad = ckpts[ckpts["flagged"]]
    lines = ["## The FP32 checkpoints measured (exported, vs the trainer's last validation accuracy)",
             to_markdown(ckpts)]
    if len(bad):
        lines.append(f"**Warning:** {len(bad)} exported checkpoint(s) score more than {EXPORT_GAP_FLAG:.0%} top-1 "
                     f"below their trainer's validation accuracy ({', '.join(map(str, bad['checkpoint']))}): "
                     "their rows compare a low-precision build with an FP32 reference that does not compute what "
                     "was trained, so they say nothing about the recipe.")
    return "\n\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4g}"
    return str(v)


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


FIGURE_NOTE = ("fidelity_scatter: paper Fig. 3's encoding (colour = device, marker = precision, filled = real or "
               "simulated backend, unfilled = emulated policy) with the baseline's (MAP's, or the FP32 row's) logit "
               "MSE on x and the arm's (Quant-Trim's) on y (mean ± std over seeds × draws, a whisker cut at the "
               "panel's edge where mean − std ≤ 0; below the diagonal the arm is closer to its FP32 reference); the "
               "reproduction measures fidelity only, not FPS or power. deltas: arm − baseline as % of the baseline's mean "
               "with the paired 95 % bootstrap CI. training: paper Fig. 8 (validation accuracy and loss per epoch per "
               "recipe; band = min–max over seeds).")


def write_report(rows_path: Path, out: Path, command: str, train_dir: Path | None = None) -> Path:
    """report.md + cells.csv, deltas.csv, spreads.csv and the figures (``figures.write_figures``: PNG) beside the
    rows; ``train_dir`` holds the trainer logs for the training-dynamics figure (default ``out/train``)."""
    import json

    from quanttrim.reproduction.figures import write_figures

    config = out / "config.json"
    df = load_rows(rows_path, json.loads(config.read_text()) if config.exists() else None)
    c, d, s = cells(df), deltas(df), spreads(df)
    c.to_csv(out / "cells.csv", index=False)
    d.to_csv(out / "deltas.csv", index=False)
    s.to_csv(out / "spreads.csv", index=False)
    seeds = sorted(df["seed"].unique().tolist())
    draws = sorted(df["calib_draw"].unique().tolist())
    figs, skipped = write_figures(c, d, out, train_dir)
    ckpts = fp32_checkpoints(rows_path, train_dir if train_dir is not None else out / "train")
    fig_lines = [f"![{name}]({path.name})" for name, path in figs.items()]
    fig_lines += [f"- {name}: not drawn ({why})" for name, why in skipped.items()]
    short = ["model", "arm", "granularity", "device", "backend", "precision", "logit_mse_delta", "logit_mse_ci",
             "logit_mse_qt_better", "top1_delta", "top1_ci", "snr_db_delta", "ece_delta", "pairs"]
    text = "\n\n".join([
        "# Quant-Trim vs MAP: seeded reproduction" if arms(df) == ["quanttrim"] else
        f"# Seeded reproduction: {', '.join(arms(df))} vs the baseline ({', '.join(sorted(df[df['role'] == 'map']['recipe'].astype(str).unique()))})",
        f"Command: `{command}`  \nSeeds: {seeds}; calibration draws: {draws}; every cell is over seeds × draws.",
        _export_section(ckpts),
        "## Arm − baseline (Quant-Trim − MAP; ablation arms − the FP32 row), paired; 95 % bootstrap CI; "
        "'better' counts pairs where the arm wins",
        to_markdown(d[[k for k in short if k in d.columns]]),
        "## Cross-backend spread (max − min over backends/devices/precisions), mean ± std over seeds × draws",
        to_markdown(s),
        "## Figures",
        FIGURE_NOTE + "\n\n" + "\n\n".join(fig_lines),
        "## Every cell (mean ± std, n)",
        to_markdown(c),
    ])
    path = out / "report.md"
    path.write_text(text + "\n")
    return path
