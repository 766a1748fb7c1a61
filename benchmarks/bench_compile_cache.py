"""Compile time, first run vs cached second run, per backend and precision (content-hash artifact cache).

The second compile uses the same workdir, so it finds the artifact by the hash of model + config + toolchain
version (+ calibration data) and skips the build. Backends in their own environment (rknn) are measured by
re-running this script with that environment's interpreter.

Usage: python benchmarks/bench_compile_cache.py [--model PATH] [--jobs onnxruntime:int8,openvino:fp32,...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import artifact, bench_model, calib_images  # noqa: E402

DEFAULT_JOBS = ("onnxruntime:int8", "openvino:fp32", "openvino:int8", "tvm:fp32", "tvm:int8", "litert:fp32",
                "litert:int8", "rknn:fp16", "rknn:int8")


def measure(name: str, precision: str, model_path: Path, workdir: Path) -> dict:
    import backends
    from backends.base import CompileConfig, UnsupportedRequest
    from devices import load_device
    from backends.environments import interpreter_for

    cls = backends.get_backend(name)
    avail = cls.availability()
    if not avail.available:
        return {"job": f"{name}:{precision}", "skipped": avail.explain()}
    python = interpreter_for(name)
    if python and Path(python).parent.parent.resolve() != Path(sys.prefix).resolve():
        return _in_env(python, name, precision, model_path, workdir)
    device = load_device("rk3588" if name == "rknn" else "cpu")
    model = artifact(model_path)
    calib = calib_images(128) if precision.startswith("int8") else None
    config = CompileConfig(precision, calibration_samples=128)
    times = []
    try:
        for _ in range(2):
            t0 = time.perf_counter()
            compiled = cls().compile(model, device, config, calib, workdir)
            times.append(time.perf_counter() - t0)
    except UnsupportedRequest as exc:
        return {"job": f"{name}:{precision}", "skipped": str(exc)}
    return {"job": f"{name}:{precision}", "first_s": times[0], "second_s": times[1],
            "second_cached": compiled.metadata.get("cached")}


def _in_env(python: str, name: str, precision: str, model_path: Path, workdir: Path) -> dict:
    proc = subprocess.run([python, __file__, "--model", str(model_path), "--jobs", f"{name}:{precision}",
                           "--workdir", str(workdir), "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"job": f"{name}:{precision}", "skipped": f"failed in {python}: {proc.stderr[-500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--jobs", default=",".join(DEFAULT_JOBS))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON list (used across environments)")
    args = ap.parse_args()
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-cache-"))
    tmp.mkdir(parents=True, exist_ok=True)
    model_path = bench_model(args.model, tmp)
    rows = []
    for job in args.jobs.split(","):
        name, precision = job.split(":")
        rows.append(measure(name, precision, model_path, tmp / "work"))
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"model {Path(model_path).name}")
    print(f"{'backend:precision':<20} {'first s':>9} {'cached s':>9}  speed-up")
    for r in rows:
        if "skipped" in r:
            print(f"{r['job']:<20} skipped: {r['skipped'][:100]}")
        else:
            print(f"{r['job']:<20} {r['first_s']:>9.2f} {r['second_s']:>9.3f}  {r['first_s'] / r['second_s']:.0f}x"
                  f"{'' if r['second_cached'] else '  (second compile did not hit the cache!)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
