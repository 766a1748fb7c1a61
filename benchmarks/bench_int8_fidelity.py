"""MAP vs Quant-Trim after ONNX Runtime static INT8: logit MSE of INT8 against the same checkpoint's FP32 ONNX.

Setting (issue 9 acceptance): QDQ, per-tensor, MinMax calibration, 256 calibration images drawn from the
*training* split, U8S8 (unsigned activations, signed weights), `quant_pre_process` then `quantize_static`.
Evaluated on test images; MSE = mean over images of ||int8_logits − fp32_logits||² (paper §5.3).

Claims are measured over several checkpoints (seeds) × calibration draws and reported with their spread,
never from one draw. Extra seeds can be trained on the fly (shorter runs on a training subset), so the
spread covers training noise too:

  python benchmarks/bench_int8_fidelity.py                       # the bundled pair, 5 calibration draws
  python benchmarks/bench_int8_fidelity.py --train-seeds 1,2 --train-epochs 3 --train-limit 20000
  python benchmarks/bench_int8_fidelity.py --pair runs/a/model.onnx runs/b/model.onnx --json out.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.data.datasets import calibration_subset, default_eval_and_calibration  # noqa: E402


def quantize_minmax(src: Path, dst: Path, calib: np.ndarray, per_channel: bool = False, method: str = "minmax",
                    learned_table: Path | None = None) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, images: np.ndarray) -> None:
            self._it = iter(images[i:i + 1] for i in range(len(images)))

        def get_next(self):  # noqa: ANN201
            x = next(self._it, None)
            return None if x is None else {"input": x}

    pre = dst.with_name(dst.stem + "-pre.onnx")
    quant_pre_process(str(src), str(pre))
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    extra = {"CalibMovingAverage": False}
    if method == "percentile":
        extra.update(CalibPercentile=99.99, CalibNumBins=2048)
    if learned_table is not None:
        # MinMax for every tensor the trainer did not learn; its learned range for every one it did.
        learned = json.loads(Path(learned_table).read_text())["tensors"]
        extra["TensorQuantOverrides"] = {n: [{"rmin": np.float32(r["min"]), "rmax": np.float32(r["max"])}]
                                         for n, r in learned.items() if n != "input"}
    quantize_static(str(pre), str(dst), Reader(calib), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=methods[method],
                    extra_options=extra)


def run_logits(path: Path, images: np.ndarray, batch: int = 250) -> np.ndarray:
    from backends.onnxruntime_backend import OrtSession
    from harness.bench.loadgen import run_outputs

    sess = OrtSession(Path(path), ["CPUExecutionProvider"], 2)
    try:
        return run_outputs(sess, {"input": images}, batch)[0]
    finally:
        sess.close()


def logit_mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum((a.astype(np.float64) - b) ** 2, axis=1)))


def train_pair(seed: int, epochs: int, limit: int | None, work: Path) -> tuple[Path, Path]:
    """Train MAP and Quant-Trim with the bundle settings (shorter) for another seed; return the ONNX paths."""
    from quanttrim.bundle import BUNDLE_RECIPES

    paths = []
    for recipe in ("map", "quanttrim"):
        out = work / f"{recipe}-s{seed}-e{epochs}-n{limit}"
        onnx_path = out / "model.onnx"
        if not onnx_path.exists():
            cmd = [sys.executable, "-m", "quanttrim", "train", "--model", "resnet20", "--dataset", "fashion-mnist",
                   "--recipe", recipe, "--epochs", str(epochs), "--seed", str(seed), "--out", str(out), "--export",
                   "--no-progress", "--val-limit", "2000", "--threads", "1"]
            if limit:
                cmd += ["--train-limit", str(limit)]
            for k, v in BUNDLE_RECIPES[recipe].items():
                cmd += ["--lr", v] if k == "lr" else ["--set", f"{k}={v}"]
            if (out / "last.pt").exists():
                cmd.append("--resume")
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
        paths.append(onnx_path)
    return paths[0], paths[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", nargs=2, action="append", metavar=("MAP_ONNX", "QT_ONNX"),
                    help="a MAP / Quant-Trim pair of ONNX files (repeatable); default: the bundled pair")
    ap.add_argument("--no-bundled", action="store_true", help="do not include the bundled pair")
    ap.add_argument("--train-seeds", default="", help="comma-separated extra seeds to train (shorter runs)")
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--train-limit", type=int, default=20000, help="training images for the extra seeds")
    ap.add_argument("--work-dir", default=str(ROOT / "runs" / "fidelity"))
    ap.add_argument("--draws", type=int, default=5, help="calibration draws (256 training images each)")
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--eval-images", type=int, default=2000, help="test images the MSE is computed on")
    ap.add_argument("--per-channel", action="store_true", help="per-channel weights (default per-tensor)")
    ap.add_argument("--method", choices=["minmax", "percentile", "learned"], default="minmax",
                    help="calibration: ORT MinMax (default), Percentile 99.99, or each model's learned table")
    ap.add_argument("--json", help="write all cells to this JSON file")
    args = ap.parse_args()

    pairs: list[tuple[str, Path, Path]] = []
    if not args.no_bundled:
        assets = ROOT / "harness" / "assets"
        pairs.append(("bundled-s0", assets / "resnet20-fmnist-map.onnx", assets / "resnet20-fmnist-quanttrim.onnx"))
    for i, (a, b) in enumerate(args.pair or []):
        pairs.append((f"pair{i}", Path(a), Path(b)))
    for s in [int(v) for v in args.train_seeds.split(",") if v.strip()]:
        m, q = train_pair(s, args.train_epochs, args.train_limit, Path(args.work_dir))
        pairs.append((f"s{s}-e{args.train_epochs}-n{args.train_limit}", m, q))

    test, train = default_eval_and_calibration()
    images, labels = test.images[: args.eval_images], test.labels[: args.eval_images]
    cells = []
    print(f"ORT static INT8 QDQ U8S8, {'per-channel' if args.per_channel else 'per-tensor'} weights, "
          f"{args.method} calibration, {args.calib_size} training images per draw, MSE on {len(images)} test images")
    print(f"{'checkpoints':22s} {'draw':>4s} {'MAP mse':>10s} {'QT mse':>10s} {'QT/MAP-1':>9s} {'MAP acc8':>8s} {'QT acc8':>8s}")
    with tempfile.TemporaryDirectory(prefix="qt-int8-") as tmp:
        for tag, map_path, qt_path in pairs:
            ref = {k: run_logits(p, images) for k, p in (("map", map_path), ("qt", qt_path))}
            for d in range(args.draws):
                calib = calibration_subset(train, args.calib_size, seed=1000 + d)
                row = {"pair": tag, "draw": d}
                for k, p in (("map", map_path), ("qt", qt_path)):
                    dst = Path(tmp) / f"{tag}-{k}-{d}.onnx"
                    table = p.with_name(p.name[:-5] + ".calib.json") if args.method == "learned" else None
                    quantize_minmax(p, dst, calib, args.per_channel, "percentile" if args.method == "percentile" else "minmax",
                                    learned_table=table)
                    out = run_logits(dst, images)
                    row[f"{k}_mse"] = logit_mse(out, ref[k])
                    row[f"{k}_int8_acc"] = float((out.argmax(1) == labels).mean())
                    row[f"{k}_fp32_acc"] = float((ref[k].argmax(1) == labels).mean())
                row["rel"] = row["qt_mse"] / row["map_mse"] - 1
                cells.append(row)
                print(f"{tag:22s} {d:4d} {row['map_mse']:10.5f} {row['qt_mse']:10.5f} {100 * row['rel']:8.1f}% "
                      f"{row['map_int8_acc']:8.4f} {row['qt_int8_acc']:8.4f}", flush=True)
    rel = np.array([c["rel"] for c in cells])
    print(f"\nQuant-Trim lower in {int((rel < 0).sum())} of {len(rel)} cells; relative change QT/MAP−1: "
          f"median {100 * np.median(rel):.1f}%, min {100 * rel.min():.1f}%, max {100 * rel.max():.1f}%")
    for tag, _, _ in pairs:
        r = np.array([c["rel"] for c in cells if c["pair"] == tag])
        mm = np.mean([c["map_mse"] for c in cells if c["pair"] == tag])
        qm = np.mean([c["qt_mse"] for c in cells if c["pair"] == tag])
        print(f"  {tag:22s} mean MSE MAP {mm:.5f}  QT {qm:.5f}  ({100 * (qm / mm - 1):+.1f}%), per-draw {100 * r.min():+.1f}..{100 * r.max():+.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "cells": cells}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
