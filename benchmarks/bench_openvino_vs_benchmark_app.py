"""OpenVINO: the harness's median latency over benchmark_app's median, same model, precision, threads, one stream.

Both load the IR the adapter compiled, with the same CPU properties (PERFORMANCE_HINT LATENCY, NUM_STREAMS 1,
INFERENCE_NUM_THREADS, INFERENCE_PRECISION_HINT f32) and one synchronous infer request; benchmark_app gets f32
input (it feeds u8 otherwise). Rounds alternate harness / benchmark_app so load drift hits both. Target: the
ratio within 0.9-1.1. benchmark_app reports OpenVINO's own C++-side ``InferRequest.latency``, while the harness
times the Python call around it (perf_counter_ns), so a fixed ~10-15 us per iteration separates them: within
target for models of ~0.3 ms and up, above it for very small ones (ResNet-20 INT8 at ~0.09 ms).

Usage: python benchmarks/bench_openvino_vs_benchmark_app.py [--model PATH] [--precision fp32|int8]
       [--threads 1] [--iters 1000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import artifact, bench_model, calib_images, eval_images  # noqa: E402

from backends.base import CompileConfig, RuntimeConfig  # noqa: E402
from backends.openvino_backend import OpenVinoBackend  # noqa: E402
from devices import load_device  # noqa: E402
from harness.bench import loadgen  # noqa: E402
_MEDIAN = re.compile(r"Median:\s+([\d.]+)\s*(ms|us)")


def benchmark_app_median_ms(exe: str, xml: Path, shape: tuple[int, ...], threads: int, iters: int,
                            workdir: Path) -> float:
    config = workdir / "ov_config.json"
    config.write_text(json.dumps({"CPU": {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                                          "INFERENCE_NUM_THREADS": str(threads),
                                          "INFERENCE_PRECISION_HINT": "f32"}}))
    cmd = [exe, "-m", str(xml), "-d", "CPU", "-load_config", str(config), "-nireq", "1", "-api", "sync",
           "-ip", "f32", "-shape", "[" + ",".join(str(d) for d in shape) + "]", "-niter", str(iters),
           "-report_type", "no_counters", "-report_folder", str(workdir)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = _MEDIAN.search(out)
    if not m:
        raise RuntimeError(f"no median latency in benchmark_app output:\n{out[-2000:]}")
    value = float(m.group(1))
    return value / 1000.0 if m.group(2) == "us" else value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "int8"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(exe).exists():
        print("benchmark_app not found (it ships in the openvino wheel: pip install '.[openvino]')")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-ov-") as tmp:
        tmp = Path(tmp)
        model = artifact(bench_model(args.model, tmp))
        device = load_device("cpu")
        backend = OpenVinoBackend()
        config = CompileConfig(args.precision, calibration="minmax" if args.precision == "int8" else None,
                               calibration_samples=128)
        compiled = backend.compile(model, device, config, calib_images(128) if args.precision == "int8" else None,
                                   tmp / "work")
        session = backend.load(compiled, device, RuntimeConfig(threads=args.threads))
        images = eval_images(256)
        loop = loadgen.LoopConfig(warmup=50, iters=args.iters, runs=1, batch=1)
        harness_ms, app_ms = [], []
        for r in range(args.rounds):
            harness_ms.append(loadgen.measure(session, {"input": images}, loop).summary()["latency_ms_p50"])
            app_ms.append(benchmark_app_median_ms(exe, Path(compiled.path), (1, *model.input_shape), args.threads,
                                                  args.iters, tmp))
            print(f"round {r + 1}: harness p50 {harness_ms[-1]:.4f} ms, benchmark_app median {app_ms[-1]:.4f} ms")
        session.close()
    h, a = float(np.median(harness_ms)), float(np.median(app_ms))
    print(f"model {model.name}, {args.precision} (plugin ran {compiled.metadata.get('inference_precision_ran')}), "
          f"threads {args.threads}, 1 stream, {args.iters} iterations x {args.rounds} rounds")
    print(f"harness median {h:.4f} ms / benchmark_app median {a:.4f} ms = {h / a:.3f} (target 0.9-1.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
