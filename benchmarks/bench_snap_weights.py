"""Snapped vs unsnapped Quant-Trim export (issue 19, defect 1): INT8 fidelity per tensor and per channel.

From finished training runs (``<train-dir>/<model>-<recipe>-s<seed>/final.pt``, e.g. a `quanttrim reproduce`
output's ``train/``), export MAP as usual and Quant-Trim twice, ``--snap-weights yes`` (weights on the trained
per-tensor INT8 grid) and ``no`` (the trained FP32 weights), then measure every export for each seed ×
calibration draw × granularity through the harness, exactly as the reproduction does
(:func:`quanttrim.reproduction.pipeline.measure`'s options → ``harness.analysis.fidelity.run_fidelity``),
and tabulate with :mod:`quanttrim.reproduction.tables`: mean ± std over seeds × draws, and three paired
differences with 95 % bootstrap CIs (snapped − MAP, unsnapped − MAP, unsnapped − snapped).

Metrics are against each export's own FP32 ONNX. Per tensor, a symmetric max-calibrating backend computes the
snapped integers from the unsnapped weights (``--grid-check`` counts the exceptions), so there the two exports
deploy the same weights and differ in the FP32 reference (the snapped one already holds the rounding).

  python benchmarks/bench_snap_weights.py --train-dir RUN/train --out results/snap-weights \\
      --reuse-rows RUN/rows.csv      # MAP / snapped rows already measured by that reproduction are not re-run
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quanttrim.reproduction.tables import CELL, cells, deltas, load_rows  # noqa: E402

KEY = ["checkpoint", "device", "backend", "precision", "seed", "calib_draw", "granularity"]
#: variant -> (recipe, --snap-weights, role in the rows)
VARIANTS = {"map": ("map", "auto", "map"), "snap": ("quanttrim", "yes", "quanttrim"),
            "raw": ("quanttrim", "no", "quanttrim-unsnapped")}


def stem(model: str, variant: str, seed: int) -> str:
    """The exported file's stem (its checkpoint name in the rows): ``<model>-<recipe>[-unsnapped]-s<seed>``."""
    recipe = VARIANTS[variant][0]
    return f"{model}-{recipe}{'-unsnapped' if variant == 'raw' else ''}-s{seed}"


def export_all(train_dir: Path, out: Path, model: str, seeds: list[int]) -> dict[tuple[str, int], Path]:
    """(variant, seed) -> ONNX file under ``out/checkpoints``, exported from ``train_dir/<model>-<recipe>-s<seed>/
    final.pt`` unless the file is already there (an existing export is reused as it is)."""
    from quanttrim.export import export_checkpoint

    paths = {}
    for s in seeds:
        for v, (recipe, snap, _) in VARIANTS.items():
            dst = out / "checkpoints" / f"{stem(model, v, s)}.onnx"
            if not dst.exists():
                export_checkpoint(str(train_dir / f"{model}-{recipe}-s{s}" / "final.pt"), str(dst), snap=snap)
            paths[(v, s)] = dst
    return paths


def measure(paths: dict[tuple[str, int], Path], args: argparse.Namespace, done: set[tuple]) -> None:
    """One harness fidelity study per (seed, draw, granularity) over the exports not measured yet."""
    from harness.analysis.fidelity import FidelityOptions, run_fidelity

    rows_path = args.out / "rows.csv"
    for s in args.seeds:
        for d in args.draws:
            for g in args.granularities:
                todo = [v for v in VARIANTS if (stem(args.model, v, s), s, d, g) not in done]
                if not todo:
                    continue
                tag = f"{args.model}-s{s}-d{d}-{g}-{'_'.join(todo)}"
                opts = FidelityOptions(checkpoints=tuple(str(paths[(v, s)]) for v in todo), devices=args.devices,
                                       quick=True, eval_samples=args.eval_samples, out=args.out / "fidelity" / tag,
                                       calib_seed=d, threads=1, per_channel=g == "per_channel",
                                       backends=args.backends, run_id=tag)
                t0 = time.time()
                rows = run_fidelity(opts).rows
                print(f"{tag}: {len(rows)} rows in {time.time() - t0:.0f} s", file=sys.stderr)
                role = {stem(args.model, v, s): VARIANTS[v][2] for v in todo}
                for r in rows:
                    r.update(model=args.model, seed=s, calib_draw=d, granularity=g, role=role.get(r["checkpoint"], ""),
                             recipe=role.get(r["checkpoint"], ""), study=tag)
                new = not rows_path.exists()
                with open(rows_path, "a", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=list(rows[0]), extrasaction="ignore")
                    if new:
                        w.writeheader()
                    w.writerows(rows)


def grid_check(paths: dict[tuple[str, int], Path], seeds: list[int]) -> list[str]:
    """Per tensor: how many INT8 weights a symmetric max calibration of the unsnapped export puts elsewhere than
    the snapped export (max|w| = 127·s in both, so only rounding ties after BN folding can differ)."""
    import onnx
    from onnx import numpy_helper

    def weights(p: Path) -> dict[str, np.ndarray]:
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(p)).graph.initializer if len(i.dims) >= 2}

    lines = []
    for s in seeds:
        raw, snap = weights(paths[("raw", s)]), weights(paths[("snap", s)])
        n = diff = 0
        for k, w in raw.items():
            scale = np.abs(w).max() / 127
            diff += int((np.round(w / scale) != np.round(snap[k] / scale)).sum())
            n += w.size
        lines.append(f"seed {s}: {diff} of {n} INT8 weights differ ({len(raw)} tensors)")
    return lines


def _pair(df: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """role a − role b, paired by seed and draw (tables.deltas computes 'quanttrim' − 'map')."""
    sub = df[df.role.isin([a, b])].copy()
    sub["role"] = sub.role.map({a: "quanttrim", b: "map"})
    return deltas(sub).set_index(CELL)


def report(df: pd.DataFrame) -> str:
    """The Markdown tables of ``df`` (load_rows rows with roles map / quanttrim / quanttrim-unsnapped), one per
    granularity: per-role mean ± std of logit MSE, SNR and agreement, then the three paired differences."""
    c = cells(df).set_index([*CELL, "role"])
    pairs = [_pair(df, "quanttrim", "map"), _pair(df, "quanttrim-unsnapped", "map"),
             _pair(df, "quanttrim-unsnapped", "quanttrim")]
    roles = ("map", "quanttrim", "quanttrim-unsnapped")

    def cell(idx: tuple, role: str, m: str, fmt: str) -> str:
        if (*idx, role) not in c.index:
            return "not measured"
        r = c.loc[(*idx, role)]
        sd = "" if pd.isna(r[f"{m}_std"]) else f" ± {r[f'{m}_std']:{fmt}}"
        return f"{r[f'{m}_mean']:{fmt}}{sd}" + (f" (n={int(r['n'])})" if m == "logit_mse" else "")

    def delta(d: pd.DataFrame, idx: tuple) -> str:
        if idx not in d.index or pd.isna(d.loc[idx].get("logit_mse_delta")):
            return "—"
        r = d.loc[idx]
        return f"{r['logit_mse_delta']:+.4f} {r['logit_mse_ci']} {r['logit_mse_qt_better']}"

    out = []
    for g in ("per_tensor", "per_channel"):
        idxs = sorted({i[:5] for i in c.index if i[1] == g})
        out += [f"### {g.replace('_', '-')} weights (real backends: as requested; emulated policies: their own)", "",
                "| device | backend | precision | logit MSE MAP | QT snapped | QT unsnapped | SNR dB MAP | snapped | "
                "unsnapped | top-1 agree MAP | snapped | unsnapped | Δ MSE snapped−MAP [CI] wins | "
                "Δ MSE unsnapped−MAP [CI] wins | Δ MSE unsnapped−snapped [CI] unsnapped wins |", "|" + "---|" * 15]
        for idx in idxs:
            vals = [cell(idx, r, "logit_mse", ".4f") for r in roles] + [cell(idx, r, "snr_db", ".1f") for r in roles]
            vals += [cell(idx, r, "top1_agreement", ".3f") for r in roles] + [delta(d, idx) for d in pairs]
            out.append("| " + " | ".join([*idx[2:], *vals]) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    csv_list = lambda t: [x for x in t.split(",") if x]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-dir", type=Path, required=True, help="folder of <model>-<recipe>-s<seed>/final.pt runs")
    p.add_argument("--out", type=Path, default=Path("results/snap-weights"))
    p.add_argument("--model", default="resnet20-w1", help="run-name prefix, e.g. resnet20-w1")
    p.add_argument("--seeds", type=lambda t: [int(x) for x in csv_list(t)], default=[0, 1, 2])
    p.add_argument("--draws", type=lambda t: [int(x) for x in csv_list(t)], default=[0, 1])
    p.add_argument("--granularities", type=csv_list, default=["per_tensor", "per_channel"])
    p.add_argument("--devices", type=lambda t: tuple(csv_list(t)),
                   default=("cpu", "hardware_a", "hardware_b", "hardware_d", "jetson_orin", "rk3588"))
    p.add_argument("--backends", type=lambda t: tuple(csv_list(t)), default=("onnxruntime", "openvino"))
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--report-only", action="store_true", help="tabulate the rows there are; measure nothing")
    p.add_argument("--reuse-rows", type=Path, nargs="*", default=[],
                   help="rows.csv files already measured on the same exports (a reproduction's MAP / snapped rows)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = export_all(args.train_dir, args.out, args.model, args.seeds)
    sources = [*args.reuse_rows, args.out / "rows.csv"]
    prior = pd.concat([pd.read_csv(f) for f in sources if f.exists()] or [pd.DataFrame(columns=KEY)])
    done = {(r.checkpoint, int(r.seed), int(r.calib_draw), r.granularity) for r in prior.itertuples()}
    if not args.report_only:
        measure(paths, args, done)
    # load_rows labels each row with the granularity it deployed (an emulated policy keeps its own, so its rows
    # are the same in both studies): one row per KEY keeps them once
    df = pd.concat([load_rows(f) for f in sources if f.exists()]).drop_duplicates(KEY, keep="last")
    df = df[df.seed.isin(args.seeds) & df.calib_draw.isin(args.draws) & df.granularity.isin(args.granularities)]
    text = "\n".join(["# Quant-Trim export: snapped vs unsnapped weights", "",
                      f"Command: `python {' '.join(sys.argv)}`  ", f"Seeds {args.seeds}, calibration draws {args.draws}, "
                      f"{args.eval_samples} evaluation images; each cell mean ± std over seeds × draws; Δ paired, 95 % "
                      "bootstrap CI, then in how many pairs the first is lower.", "",
                      "Per-tensor grid check (symmetric max calibration of the unsnapped weights vs the snapped ones):",
                      *[f"- {line}" for line in grid_check(paths, args.seeds)], "", report(df)])
    (args.out / "report.md").write_text(text + "\n")
    df.to_csv(args.out / "report-rows.csv", index=False)  # every row the tables used (reused ones included)
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
