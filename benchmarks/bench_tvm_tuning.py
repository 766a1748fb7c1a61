"""TVM: tuned over untuned latency (MetaSchedule with a trial budget), and the tuning database's reuse.

Compiles the model untuned and tuned (``tuning_trials``, split over every task), times both through
harness.bench.loadgen with the same threads, and compiles the tuned model again from a fresh artifact dir to show
the cached database is reused (compile time without tuning). Tuning is slow on 2 shared cores; the notes
measured 89 trials in ~7 min for 45.7 -> 2.2 ms on a ResNet-style model.

Usage: python benchmarks/bench_tvm_tuning.py [--model PATH] [--trials 32] [--threads 1] [--iters 200]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import artifact, bench_model, eval_images  # noqa: E402

from backends.base import CompileConfig, RuntimeConfig  # noqa: E402
from backends.tvm_backend import TvmBackend  # noqa: E402
from devices import load_device  # noqa: E402
from harness.bench import loadgen  # noqa: E402
def timed_compile(backend, model, device, config, workdir):
    t0 = time.perf_counter()
    compiled = backend.compile(model, device, config, None, workdir)
    return compiled, time.perf_counter() - t0


def p50_ms(backend, compiled, device, threads, iters):
    session = backend.load(compiled, device, RuntimeConfig(threads=threads))
    try:
        return loadgen.measure(session, {"input": eval_images(64)}, loadgen.LoopConfig(20, iters, 3, 1)).summary()["latency_ms_p50"]
    finally:
        session.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--workdir", default=None, help="keep artifacts and the tuning database here (default: temp)")
    args = ap.parse_args()
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-tvm-"))
    tmp.mkdir(parents=True, exist_ok=True)
    model = artifact(bench_model(args.model, tmp))
    device, backend = load_device("cpu"), TvmBackend()
    untuned, untuned_s = timed_compile(backend, model, device, CompileConfig("fp32"), tmp / "untuned")
    tuned_cfg = CompileConfig("fp32", options=(("tuning_trials", args.trials),))
    tuned, tuned_s = timed_compile(backend, model, device, tuned_cfg, tmp / "work")
    shutil.rmtree(Path(tuned.path).parent)  # drop the library, keep the tuning database
    again, again_s = timed_compile(backend, model, device, tuned_cfg, tmp / "work")
    u_ms = p50_ms(backend, untuned, device, args.threads, args.iters)
    t_ms = p50_ms(backend, again, device, args.threads, args.iters)
    print(f"model {model.name}, target {untuned.metadata['tvm_target']}, threads {args.threads}")
    print(f"untuned: compile {untuned_s:.1f} s, p50 {u_ms:.3f} ms")
    m = tuned.metadata
    print(f"tuned ({m.get('tuning_trials')} trials, {m.get('tuning_trials_per_task')} per task, "
          f"{m.get('tuning_tasks_reached')}/{m.get('tuning_tasks')} tasks reached; {m.get('tuning_source')}): "
          f"compile {tuned_s:.1f} s (tuning {m.get('tuning_s', 0):.1f} s), p50 {t_ms:.3f} ms")
    print(f"tuned again with the cached database: compile {again_s:.1f} s (source: "
          f"{again.metadata.get('tuning_source')})")
    print(f"untuned / tuned latency = {u_ms / t_ms:.2f}x")
    if not args.workdir:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
