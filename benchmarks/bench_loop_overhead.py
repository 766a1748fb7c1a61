"""Harness loop overhead and the default run's cost.

1. Median latency through `harness.bench.loadgen.measure` over the median of a bare `session.run` loop, same
   process, same model, same threads, interleaved rounds (target ≤ 1.03).
2. Wall time and peak memory of the full default run (`python -m harness run`), unless --skip-default-run.

Usage: python benchmarks/bench_loop_overhead.py [--model PATH] [--iters N] [--rounds R] [--skip-default-run]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.onnxruntime_backend import OrtSession  # noqa: E402
from harness.bench import loadgen  # noqa: E402
from harness.model.checkpoint import default_checkpoint_paths  # noqa: E402
from harness.data.datasets import load_bundled_sample  # noqa: E402


def bare_loop(session: OrtSession, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    samples = np.empty(len(batches), dtype=np.int64)
    run, clock = session.run, time.perf_counter_ns
    for i, x in enumerate(batches):
        t0 = clock()
        run(x)
        samples[i] = clock() - t0
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="ONNX model (default: the bundled MAP checkpoint)")
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved bare/harness rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-default-run", action="store_true")
    args = ap.parse_args()
    model = args.model or default_checkpoint_paths()[0]
    images = load_bundled_sample("test").images
    session = OrtSession(model, ["CPUExecutionProvider"], args.threads)
    inputs = {session.input_names[0]: images}
    batches = loadgen.prepare_batches(inputs, 1, args.iters)
    cfg = loadgen.LoopConfig(warmup=20, iters=args.iters, runs=1)
    bare_medians, harness_medians = [], []
    bare_loop(session, batches[:50])
    for _ in range(args.rounds):
        bare_medians.append(float(np.median(bare_loop(session, batches))))
        harness_medians.append(float(np.median(loadgen.measure(session, inputs, cfg).samples_ns)))
    bare, harn = float(np.median(bare_medians)), float(np.median(harness_medians))
    print(f"model: {model.name}, threads {args.threads}, {args.rounds} interleaved rounds × {args.iters} iterations")
    print(f"bare session.run median:   {bare / 1e3:8.1f} µs")
    print(f"harness loop median:       {harn / 1e3:8.1f} µs")
    print(f"overhead ratio (target ≤ 1.03): {harn / bare:.3f}")
    if not args.skip_default_run:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "harness", "run", "--results", tmp], cwd=ROOT,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t0
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"default run (python -m harness run): exit {proc.returncode}, wall {wall:.1f} s, "
              f"peak RSS of the largest process {peak_mib:.0f} MiB")
        if proc.returncode != 0:
            print(proc.stderr[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
