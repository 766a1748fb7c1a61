"""Every CPU backend against ONNX Runtime FP32, on one model and one thread count, in one process.

Each backend's median latency (p50 through harness.bench.loadgen, batch 1) over ONNX Runtime FP32's: ORT INT8
(QDQ), TVM untuned (no tuning database), TVM tuned (the bundled pre-tuned databases, or --tuning-db; conv2d in
NHWC, the default, and in the graph's NCHW where a database for it exists), OpenVINO FP32/INT8, LiteRT
FP32/FP16/INT8 where its converter is installed (``python -m harness env setup litert-converter``; found under
$QUANTTRIM_HARNESS_ENV_ROOT, else ~/.cache/quanttrim-harness/envs). Rounds alternate the backends so load drift on
a shared host hits all of them; each figure is the median over rounds. Then the harness/benchmark_app ratio for
OpenVINO FP32 and INT8 (the same IR, properties and threads; benchmarks/bench_openvino_vs_benchmark_app.py).

A backend that cannot run here prints why instead of a figure.

Usage: python benchmarks/bench_backends.py [--model PATH | --model cnn224] [--threads 1] [--iters 300]
       [--rounds 3] [--tuning-db DIR] [--no-benchmark-app]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import artifact, bench_model, calib_images, cnn224, eval_images, random_images  # noqa: E402

from backends.base import CompileConfig, RuntimeConfig  # noqa: E402
from backends.registry import create_backend  # noqa: E402
from devices import load_device  # noqa: E402
from harness.bench import loadgen  # noqa: E402
from harness.model.checkpoint import BUNDLED_TVM_TUNING_DIR  # noqa: E402

#: Pre-tuned TVM entries for the benchmark-only models (cnn224), searched after the bundled demo's.
BENCH_TVM_TUNING_DIR = Path(__file__).resolve().parent / "tvm-tuning"
#: Seconds one timed run of a backend should take at most (slow ones, untuned TVM, get fewer iterations).
RUN_BUDGET_S = 4.0


@dataclass
class Row:
    label: str
    backend: str
    config: CompileConfig
    workdir: str = "work"
    session: Any = None
    compiled: Any = None
    iters: int = 0
    p50s: list[float] | None = None
    mins: list[float] | None = None
    skip: str | None = None


def rows(tuning_db: str) -> list[Row]:
    int8 = dict(calibration="minmax", calibration_samples=128)
    return [
        Row("onnxruntime fp32", "onnxruntime", CompileConfig("fp32")),
        Row("onnxruntime int8", "onnxruntime", CompileConfig("int8", **int8)),
        # a fresh cache and no seeds: nothing to apply, the untuned build
        Row("tvm fp32 untuned", "tvm", CompileConfig("fp32", options=(("tuning_db", ""),)), workdir="untuned"),
        Row("tvm fp32 tuned", "tvm", CompileConfig("fp32", options=(("tuning_db", tuning_db),))),
        # the ONNX graph's own layout (the default compiles conv2d in NHWC): where a database for it exists
        Row("tvm fp32 tuned NCHW", "tvm", CompileConfig("fp32", options=(("tuning_db", tuning_db),
                                                                         ("conv_layout", "NCHW")))),
        Row("openvino fp32", "openvino", CompileConfig("fp32")),
        Row("openvino int8", "openvino", CompileConfig("int8", **int8)),
        Row("litert fp32", "litert", CompileConfig("fp32")),
        Row("litert fp16", "litert", CompileConfig("fp16")),
        Row("litert int8", "litert", CompileConfig("int8", **int8)),
    ]


def prepare(row: Row, model, device, calib, tmp: Path, threads: int) -> None:
    try:
        backend = create_backend(row.backend)
        avail = backend.availability()
        if not avail.available:
            row.skip = avail.explain()
            return
        row.compiled = backend.compile(model, device, row.config, calib if row.config.precision == "int8" else None,
                                       tmp / row.workdir)
        if row.backend == "tvm" and "untuned" not in row.label and not row.compiled.metadata.get("tuned"):
            row.skip = f"no tuning database for this model and target: {row.compiled.metadata.get('timing_note')}"
            return
    except Exception as exc:  # a backend that cannot run this model says why; the others go on
        row.skip = f"{type(exc).__name__}: {str(exc)[:300]}"


def load(row: Row, device, threads: int) -> None:
    try:
        row.session = create_backend(row.backend).load(row.compiled, device, RuntimeConfig(threads=threads))
    except Exception as exc:
        row.skip = f"{type(exc).__name__}: {str(exc)[:300]}"


def calibrate_iters(row: Row, feeds: dict[str, np.ndarray], wanted: int) -> None:
    loadgen.measure(row.session, feeds, loadgen.LoopConfig(warmup=2, iters=1, runs=1))  # first calls compile
    t0 = time.perf_counter()
    loadgen.measure(row.session, feeds, loadgen.LoopConfig(warmup=0, iters=3, runs=1))
    per_iter_s = (time.perf_counter() - t0) / 3
    row.iters = int(max(20, min(wanted, RUN_BUDGET_S / max(per_iter_s, 1e-6))))


def note(row: Row) -> str:
    meta = row.compiled.metadata if row.compiled is not None else {}
    if row.backend == "tvm" and meta.get("tuned"):
        return (f"tuned: {meta['tuning_trials']} trials, {meta['tuning_tasks_reached']}/{meta['tuning_tasks']} "
                f"tasks, conv {meta.get('tvm_conv_layout')}, {meta['tuning_source']}")
    if row.backend == "tvm":
        return f"untuned, conv {meta.get('tvm_conv_layout')}"
    if row.backend == "openvino":
        return f"ran {meta.get('inference_precision_ran', '?')}"
    return ""


def benchmark_app_ratios(rows_by_label: dict[str, Row], model, feeds, threads: int, iters: int, rounds: int,
                         tmp: Path) -> None:
    from bench_openvino_vs_benchmark_app import benchmark_app_median_ms

    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(exe).exists():
        print("benchmark_app not found (it ships in the openvino wheel): no harness/benchmark_app ratio")
        return
    loop = loadgen.LoopConfig(warmup=50, iters=iters, runs=1)
    for label in ("openvino fp32", "openvino int8"):
        row = rows_by_label[label]
        if row.session is None:
            print(f"{label}: {row.skip}")
            continue
        h, a = [], []
        for _ in range(rounds):
            h.append(loadgen.measure(row.session, feeds, loop).summary()["latency_ms_p50"])
            a.append(benchmark_app_median_ms(exe, Path(row.compiled.path), (1, *model.input_shape), threads, iters,
                                             tmp))
        hm, am = float(np.median(h)), float(np.median(a))
        print(f"{label}: harness p50 {hm:.4f} ms / benchmark_app median {am:.4f} ms = {hm / am:.3f} (target 0.9-1.1)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="an ONNX file, or 'cnn224' (a small 224x224 CNN made here)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tuning-db", default=os.pathsep.join([str(BUNDLED_TVM_TUNING_DIR), str(BENCH_TVM_TUNING_DIR)]),
                    help="folders of TVM tuning entries for the tuned row, os.pathsep-separated (default: the "
                         "bundled demo's, then benchmarks/tvm-tuning for cnn224)")
    ap.add_argument("--workdir", default=None, help="keep compiled artifacts here (default: a temp folder)")
    ap.add_argument("--no-benchmark-app", action="store_true")
    args = ap.parse_args()
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-backends-"))
    tmp.mkdir(parents=True, exist_ok=True)
    path = cnn224(tmp) if args.model == "cnn224" else bench_model(args.model, tmp)
    model = artifact(path)
    if args.model == "cnn224" or model.input_shape != (1, 28, 28):
        images, calib = random_images(model.input_shape, 64), random_images(model.input_shape, 128, seed=1)
    else:
        images, calib = eval_images(256), calib_images(128)
    feeds = {model.input_name: images}
    device = load_device("cpu")
    table = rows(args.tuning_db)
    for row in table:   # every compile before any load: a TVM session pins its thread, which changes the target
        prepare(row, model, device, calib, tmp, args.threads)
    for row in table:
        if row.skip is None:
            load(row, device, args.threads)
        if row.session is not None:
            calibrate_iters(row, feeds, args.iters)
            row.p50s, row.mins = [], []
    live = [r for r in table if r.session is not None]
    for _ in range(args.rounds):
        for row in live:
            loop = loadgen.LoopConfig(warmup=10, iters=row.iters, runs=1)
            summary = loadgen.measure(row.session, feeds, loop).summary()
            row.p50s.append(summary["latency_ms_p50"])
            row.mins.append(summary["latency_ms_min"])
    base = float(np.median(table[0].p50s)) if table[0].p50s else None
    base_min = float(np.median(table[0].mins)) if table[0].mins else None
    load_avg = os.getloadavg()[0]
    print(f"model {model.name} {tuple(model.input_shape)}, threads {args.threads}, batch 1, {args.rounds} rounds, "
          f"load average {load_avg:.1f} on {os.cpu_count()} CPUs")
    if load_avg > (os.cpu_count() or 1):
        # measured: ORT's 0.8 ms cnn224 call had p50 0.77 ms alone but 5 ms per call four at a time (load ~14)
        print("(host oversubscribed: an inference longer than the scheduler's slice is preempted in most calls, "
              "so a multi-ms p50 is inflated more than a short one; 'min' is the uncontended cost)")
    print(f"{'backend':<20} {'p50 ms':>10} {'/ ORT fp32':>11} {'min ms':>9} {'/ ORT min':>10}  iters  note")
    for row in table:
        if row.p50s is None:
            print(f"{row.label:<20} {'-':>10} {'-':>11} {'-':>9} {'-':>10}  {'-':>5}  not run: {row.skip}")
            continue
        p = float(np.median(row.p50s))
        ratio = f"{p / base:.2f}x" if base else "-"
        m = float(np.median(row.mins))
        min_ratio = f"{m / base_min:.2f}x" if base_min else "-"
        print(f"{row.label:<20} {p:>10.4f} {ratio:>11} {m:>9.4f} {min_ratio:>10}  {row.iters:>5}  {note(row)}")
    if not args.no_benchmark_app:
        benchmark_app_ratios({r.label: r for r in table}, model, feeds, args.threads, min(args.iters, 1000),
                             args.rounds, tmp)
    for row in live:
        row.session.close()
    if not args.workdir:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
