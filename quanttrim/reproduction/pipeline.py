"""Train, export and measure: the reproduction's steps. The harness does all measuring (no second loop)."""
from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from quanttrim.reproduction.config import ModelSpec, ReproductionConfig

if TYPE_CHECKING:
    from harness.analysis.fidelity import FidelityOptions

ROWS_FILE = "rows.csv"


def train_and_export(cfg: ReproductionConfig, spec: ModelSpec, recipe: str, seed: int, out: Path,
                     log: Callable[[str], None]) -> Path:
    """Train one (model, recipe, seed) and export FP32 ONNX (+ learned ranges) with ``cfg.snap_weights``; reuses a
    finished export, but not one whose weights were exported otherwise (ValueError: use another --out)."""
    from quanttrim.export import export_checkpoint, resolve_snap, snapped_in
    from quanttrim.recipes import get_recipe
    from quanttrim.train import TrainConfig, train

    run_dir = out / "train" / f"{spec.name}-w{spec.width:g}-{recipe}-s{seed}"
    onnx_path = out / "checkpoints" / f"{spec.name}-w{spec.width:g}-{recipe}-s{seed}.onnx"
    rcfg = get_recipe(recipe, cfg.epochs, {"lr": str(cfg.lr)})
    if onnx_path.exists():
        want, have = resolve_snap(cfg.snap_weights, rcfg.quant.enabled), snapped_in(onnx_path)
        if have is not None and have != want:
            raise ValueError(f"{onnx_path} was exported with snap_weights={have}, this run asks for {want} "
                             f"(--snap-weights {cfg.snap_weights}): use another --out")
        log(f"reusing {onnx_path}")
        return onnx_path
    tcfg = TrainConfig(model=spec.name, dataset=cfg.dataset, recipe=rcfg,
                       epochs=cfg.epochs, out=str(run_dir), seed=seed, data_dir=cfg.data_dir, width=spec.width,
                       train_limit=cfg.train_limit, threads=cfg.threads, stop_after_steps=cfg.stop_after_steps,
                       progress=False)
    t0 = time.perf_counter()
    res = train(tcfg, resume=(run_dir / "last.pt").exists())
    log(f"trained {run_dir.name} in {time.perf_counter() - t0:.0f} s")
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    export_checkpoint(res["checkpoint"], str(onnx_path), snap=cfg.snap_weights)
    return onnx_path


def measure(cfg: ReproductionConfig, checkpoints: tuple[Path, ...], draw: int, granularity: str,
            out: Path, tag: str) -> list[dict[str, Any]]:
    """One `harness fidelity` study of the baseline and its arms: every row of its report, as dicts.

    The report goes to ``out/fidelity/<tag>``; the runs to the one folder every study shares (:func:`runs_dir`),
    so the harness's caches of that folder serve each study what an earlier one already built: the FP32/FP16/BF16
    artifacts, references and validation passes (they do not depend on the draw or the granularity), and the
    calibrated ones of the same draw. Runs left by an interrupted attempt at this study are removed first (the
    study was not recorded in rows.csv; it is measured again, from the caches where it can be)."""
    from harness.analysis.fidelity import run_fidelity

    for stale in sorted(runs_dir(out).glob(f"{tag}-[0-9][0-9]-*")):
        if stale.is_dir():
            shutil.rmtree(stale)
    return run_fidelity(fidelity_options(cfg, checkpoints, draw, granularity, out, tag)).rows


def fidelity_options(cfg: ReproductionConfig, checkpoints: tuple[Path, ...], draw: int, granularity: str,
                     out: Path, tag: str) -> "FidelityOptions":
    """The `harness fidelity` options of one study (see :func:`measure`)."""
    from harness.analysis.fidelity import FidelityOptions

    return FidelityOptions(checkpoints=tuple(str(c) for c in checkpoints), devices=cfg.devices,
                           quick=cfg.quick_loop, eval_samples=cfg.eval_samples, out=out / "fidelity" / tag,
                           calib_seed=draw, threads=cfg.threads, per_channel=granularity == "per_channel",
                           backends=cfg.backends, validate_budget_s=None,  # same images in every paired row
                           run_id=tag, runs_dir=runs_dir(out))


def runs_dir(out: Path) -> Path:
    """The results folder every study of a reproduction in ``out`` runs into: ``out/fidelity/runs``. (A folder
    written before it was shared holds each study's runs in ``out/fidelity/<tag>/runs``; those studies are in
    rows.csv, so a resumed run does not measure them again.)"""
    return out / "fidelity" / "runs"


def study_tag(spec: ModelSpec, seed: int, draw: int, granularity: str) -> str:
    """One study's name (its report folder, its runs' id prefix, its rows' ``study`` in rows.csv), e.g.
    ``resnet20-w1-s0-d1-per_tensor``."""
    return f"{spec.name}-w{spec.width:g}-s{seed}-d{draw}-{granularity}"


def run(cfg: ReproductionConfig, out: Path, log: Callable[[str], None] = print) -> Path:
    """The whole study; rows (one per checkpoint × device × backend × precision × seed × draw × granularity)
    are appended to ``out/rows.csv`` as each study finishes, so an interrupted run keeps what it measured."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    rows_path = out / ROWS_FILE
    done = _done_tags(rows_path)
    for spec in cfg.models:
        for seed in cfg.seeds:
            paths = {r: train_and_export(cfg, spec, r, seed, out, log) for r in spec.recipes}
            for draw in cfg.calib_draws:
                for gran in cfg.granularities:
                    tag = study_tag(spec, seed, draw, gran)
                    if tag in done:
                        continue
                    log(f"measuring {tag}")
                    rows = measure(cfg, tuple(paths[r] for r in spec.recipes), draw, gran, out, tag)
                    recipe_of = {paths[r].stem: r for r in spec.recipes}
                    for row in rows:
                        recipe = recipe_of.get(row["checkpoint"], "")
                        row.update(model=f"{spec.name}-w{spec.width:g}", seed=seed, calib_draw=draw,
                                   granularity=gran, recipe=recipe, role=spec.role(recipe) if recipe else "",
                                   study=tag)
                    _append(rows_path, rows)
    return rows_path


def _done_tags(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with open(path, newline="") as fh:
        return {r["study"] for r in csv.DictReader(fh)}


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    new = not path.exists()
    fields = list(rows[0].keys())
    if not new:
        with open(path, newline="") as fh:
            fields = next(csv.reader(fh))
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)
