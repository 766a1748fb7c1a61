"""Calibration-set sensitivity: one device policy, calibration sets of different sizes and sources.

For each checkpoint the policy is built (``emulated`` backend, in this process: the ONNX Runtime
graphs it builds cannot crash the interpreter the way vendor SDKs can) from calibration draws of
several sizes (e.g. 32 vs 1024 images), sources (the training split, or a shifted one such as
brightness-scaled images) and random seeds, and scored on the same evaluation images against the
FP32 reference. The spread of logit MSE / top-1 across those calibration sets says how much the
checkpoint depends on its calibration data — the paper claims Quant-Trim reduces that dependence.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from devices.choices import did_you_mean
from harness.store.labels import MSE_FIELDS

#: Calibration sources: how the draw from the training split is transformed.
SOURCES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "train": lambda x, rng: x,
    "bright": lambda x, rng: np.clip(x * 1.6, 0.0, 1.0).astype(np.float32),
    "dark": lambda x, rng: (x * 0.5).astype(np.float32),
    "noisy": lambda x, rng: np.clip(x + rng.normal(0.0, 0.1, x.shape), 0.0, 1.0).astype(np.float32),
}
SOURCE_HELP = ("train: the training split as is; bright: pixel values x1.6 (clipped); dark: x0.5; "
               "noisy: + N(0, 0.1) noise (clipped)")


@dataclass(frozen=True)
class CalibStudyOptions:
    checkpoints: tuple[str, ...] = ()
    device: str = "hardware_a"
    precision: str = "int8"
    sizes: tuple[int, ...] = (32, 1024)
    sources: tuple[str, ...] = ("train", "bright")
    seeds: tuple[int, ...] = (0, 1)
    eval_samples: int | None = 2000
    calibration_method: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown:
            raise ValueError(f"unknown calibration source(s) {', '.join(unknown)}; valid: {', '.join(SOURCES)}")
        if not self.sizes or any(n < 1 for n in self.sizes):
            raise ValueError("calibration sizes must be >= 1 (e.g. --sizes 32,1024)")
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise ValueError("--eval-samples must be >= 1")


@dataclass
class CalibStudy:
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_study(options: CalibStudyOptions, eval_split: Any = None, calib_split: Any = None,
              workdir: Path | None = None, progress: Callable[[str], None] | None = None) -> CalibStudy:
    """Build and score the policy for every (checkpoint, source, size, seed)."""
    from backends import create_backend
    from backends.base import CompileConfig, RuntimeConfig
    from backends.onnxruntime_backend import OrtSession
    from devices.loader import load_device
    from harness.data import datasets
    from harness.model.card import effective_card
    from harness.model.checkpoint import default_checkpoint_paths, load_checkpoint
    from harness.scoring.outputs import score_outputs

    t0 = time.perf_counter()
    study = CalibStudy()
    device = load_device(options.device)
    if options.precision not in {p.name for p in device.quant_policies}:
        names = [p.name for p in device.quant_policies]
        raise ValueError(f"device {device.name!r} has no quantization policy {options.precision!r}; "
                         f"{did_you_mean(options.precision, names)}valid: {', '.join(names) or '(none)'}")
    if eval_split is None or calib_split is None:
        e, c = datasets.default_eval_and_calibration()
        eval_split, calib_split = eval_split or e, calib_split or c
    eval_split = eval_split.head(options.eval_samples)
    policy = device.policy(options.precision)
    per_channel, signed = policy.per_channel, policy.activation_signed
    paths = [Path(p) for p in options.checkpoints] or default_checkpoint_paths()
    backend = create_backend("emulated")
    runtime = RuntimeConfig(threads=options.threads)
    sizes = sorted(set(options.sizes))
    if max(sizes) > len(calib_split):
        study.notes.append(f"calibration split has only {len(calib_split)} images; larger sizes are capped")
    with tempfile.TemporaryDirectory(prefix="qt-calib-study-") as tmp:
        work = Path(workdir) if workdir else Path(tmp)
        for path in paths:
            ckpt = load_checkpoint(path)
            cards = effective_card(ckpt).outputs  # every output scored by its role (no second softmax)
            art = ckpt.with_data_shapes({ckpt.input_name: eval_split.images.shape[1:]}).artifact()
            ref_sess = OrtSession(ckpt.path, ["CPUExecutionProvider"], options.threads)
            ref = _run_all(ref_sess, ckpt.input_name, eval_split.images)
            ref_sess.close()
            for source in options.sources:
                for size in sizes:
                    for seed in options.seeds:
                        rng = np.random.default_rng(seed + 7919)
                        calib = SOURCES[source](datasets.calibration_subset(calib_split, size, seed=seed), rng)
                        config = CompileConfig(precision=options.precision, calibration=options.calibration_method,
                                               calibration_samples=len(calib), per_channel=per_channel,
                                               activation_signed=signed,
                                               options=(("policy_calibration_samples", False),))
                        if progress:
                            progress(f"{ckpt.name}: {source} x{len(calib)} seed {seed}")
                        compiled = backend.compile(art, device, config, calib, work)
                        sess = backend.load(compiled, device, runtime)
                        try:
                            out = _run_all(sess, ckpt.input_name, eval_split.images)
                        finally:
                            sess.close()
                        m = {k: v for k, v in score_outputs(out, ref, cards, eval_split.labels).fields.items()
                             if not isinstance(v, (list, dict))}
                        study.rows.append({"checkpoint": ckpt.name, "device": device.name,
                                           "precision": options.precision, "source": source,
                                           "calibration_images": int(len(calib)), "seed": seed,
                                           "calibration_method": compiled.metadata.get("calibration_method"), **m})
    study.summary = summarize(study.rows)
    study.seconds = time.perf_counter() - t0
    return study


def _run_all(session: Any, input_name: str, images: np.ndarray, batch: int = 256) -> list[np.ndarray]:
    """Every output over the images, in graph order, through the one evaluator."""
    from harness.bench.loadgen import run_outputs

    return run_outputs(session, {input_name: images}, batch)


def mse_field(rows: Sequence[dict[str, Any]]) -> str:
    """The MSE the rows share, by the primary output's role: logit_mse (logits), probability_mse (probabilities,
    e.g. a model ending in Softmax), else output_mse (harness.store.labels.MSE_FIELDS)."""
    for key in MSE_FIELDS:
        if rows and all(r.get(key) is not None for r in rows):
            return key
    raise ValueError("the calibration sets' rows share no MSE against FP32 (logit, probability or element-wise)")


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per checkpoint: how far the MSE against FP32 (``mse_field``: logit MSE for logits) and top-1 move across
    all calibration sets, and per set kind; keys are prefixed with the MSE's field name."""
    out = []
    for ckpt in dict.fromkeys(r["checkpoint"] for r in rows):
        sel = [r for r in rows if r["checkpoint"] == ckpt]
        key = mse_field(sel)
        mse = np.array([r[key] for r in sel], dtype=np.float64)
        top1 = np.array([r["top1"] for r in sel], dtype=np.float64)
        entry: dict[str, Any] = {
            "checkpoint": ckpt, "calibration_sets": len(sel), "mse_field": key,
            f"{key}_min": float(mse.min()), f"{key}_max": float(mse.max()),
            f"{key}_max_over_min": float(mse.max() / mse.min()) if mse.min() > 0 else math.inf,
            f"{key}_cv": float(mse.std() / mse.mean()) if mse.mean() > 0 else 0.0,
            "top1_range": float(top1.max() - top1.min()), "top1_std": float(top1.std()),
        }
        for (source, size) in dict.fromkeys((r["source"], r["calibration_images"]) for r in sel):
            vals = [r[key] for r in sel if r["source"] == source and r["calibration_images"] == size]
            entry[f"{key}_mean[{source},{size}]"] = float(np.mean(vals))
        out.append(entry)
    return out


def markdown(study: CalibStudy) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.5g}" if isinstance(v, float) else str(v)

    key = mse_field(study.rows) if study.rows else "logit_mse"
    lines = ["# Calibration-set sensitivity", "",
             f"| checkpoint | source | images | seed | top-1 % | {key} | SNR dB |", "|---|---|---|---|---|---|---|"]
    for r in study.rows:
        snr = "exact" if r.get("snr_db") is None else f"{r['snr_db']:.2f}"
        lines.append(f"| {r['checkpoint']} | {r['source']} | {r['calibration_images']} | {r['seed']} | "
                     f"{100 * r['top1']:.2f} | {r[key]:.5g} | {snr} |")
    lines += ["", "## Spread across calibration sets", ""]
    if study.summary:
        keys = list(study.summary[0].keys())
        lines += ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
        lines += ["| " + " | ".join(fmt(s.get(k)) for k in keys) + " |" for s in study.summary]
    lines += ["", *[f"- {n}" for n in study.notes]]
    return "\n".join(lines) + "\n"


def write_outputs(study: CalibStudy, out: Path) -> list[Path]:
    import csv

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, rows in (("calibration_sensitivity.csv", study.rows), ("calibration_summary.csv", study.summary)):
        if rows:
            with open(out / name, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
                w.writeheader()
                w.writerows(rows)
            files.append(out / name)
    (out / "calibration_sensitivity.md").write_text(markdown(study))
    files.append(out / "calibration_sensitivity.md")
    return files
