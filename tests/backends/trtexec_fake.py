"""A fake ``trtexec`` (an executable Python script) with recorded-format performance summaries."""
from __future__ import annotations

import json
import sys

# -- trtexec -----------------------------------------------------------------------------------
#: Recorded-format trtexec summaries (TensorRT 10.x prints three percentiles, 8.x one plus End-to-End).
TRTEXEC_SUMMARY_10X = """[11/25/2026-10:00:01] [I] === Performance summary ===
[11/25/2026-10:00:01] [I] Throughput: 2870.12 qps
[11/25/2026-10:00:01] [I] Latency: min = 0.321 ms, max = 0.912 ms, mean = 0.3476 ms, median = 0.3412 ms, percentile(90%) = 0.3588 ms, percentile(95%) = 0.3701 ms, percentile(99%) = 0.4523 ms
[11/25/2026-10:00:01] [I] Enqueue Time: min = 0.0521 ms, max = 0.1882 ms, mean = 0.0612 ms, median = 0.0598 ms, percentile(90%) = 0.0671 ms, percentile(95%) = 0.0702 ms, percentile(99%) = 0.0911 ms
[11/25/2026-10:00:01] [I] H2D Latency: min = 0.0081 ms, max = 0.0301 ms, mean = 0.0093 ms, median = 0.0090 ms, percentile(90%) = 0.0101 ms, percentile(95%) = 0.0108 ms, percentile(99%) = 0.0142 ms
[11/25/2026-10:00:01] [I] GPU Compute Time: min = 0.301 ms, max = 0.871 ms, mean = 0.3301 ms, median = 0.3243 ms, percentile(90%) = 0.3401 ms, percentile(95%) = 0.3511 ms, percentile(99%) = 0.4302 ms
[11/25/2026-10:00:01] [I] D2H Latency: min = 0.0051 ms, max = 0.0212 ms, mean = 0.0082 ms, median = 0.0079 ms, percentile(90%) = 0.0090 ms, percentile(95%) = 0.0095 ms, percentile(99%) = 0.0120 ms
[11/25/2026-10:00:01] [I] Total Host Walltime: 0.348 s
[11/25/2026-10:00:01] [I] Total GPU Compute Time: 0.3301 s
[11/25/2026-10:00:01] [W] * GPU compute time is unstable, with coefficient of variance = 9.1%.
[11/25/2026-10:00:01] [I] Explanations of the performance metrics are printed in the verbose logs.
"""
TRTEXEC_SUMMARY_8X = """[11/25/2026-10:00:01] [I] === Performance summary ===
[11/25/2026-10:00:01] [I] Throughput: 1204.5 qps
[11/25/2026-10:00:01] [I] Latency: min = 0.801 ms, max = 1.912 ms, mean = 0.8276 ms, median = 0.8212 ms, percentile(99%) = 1.0523 ms
[11/25/2026-10:00:01] [I] End-to-End Host Latency: min = 0.811 ms, max = 2.01 ms, mean = 0.84 ms, median = 0.83 ms, percentile(99%) = 1.1 ms
[11/25/2026-10:00:01] [I] Enqueue Time: min = 0.2 ms, max = 0.5 ms, mean = 0.25 ms, median = 0.24 ms, percentile(99%) = 0.4 ms
[11/25/2026-10:00:01] [I] H2D Latency: min = 0.02 ms, max = 0.05 ms, mean = 0.025 ms, median = 0.024 ms, percentile(99%) = 0.04 ms
[11/25/2026-10:00:01] [I] GPU Compute Time: min = 0.761 ms, max = 1.851 ms, mean = 0.7871 ms, median = 0.7801 ms, percentile(99%) = 1.0011 ms
[11/25/2026-10:00:01] [I] D2H Latency: min = 0.01 ms, max = 0.03 ms, mean = 0.015 ms, median = 0.014 ms, percentile(99%) = 0.02 ms
[11/25/2026-10:00:01] [I] Total Host Walltime: 3.0021 s
[11/25/2026-10:00:01] [I] Total GPU Compute Time: 2.9001 s
[11/25/2026-10:00:01] [I] Explanations of the performance metrics are printed in the verbose logs.
"""

FAKE_TRTEXEC = r'''#!{python}
"""A fake trtexec: records its argv, prints a recorded transcript, writes engine/times/outputs files."""
import json, os, sys
from pathlib import Path
import numpy as np

here = Path(__file__).resolve().parent
args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in sys.argv[1:])
with open(here / "argv.jsonl", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
version = os.environ.get("FAKE_TRTEXEC_VERSION", "10.3.0")
major, minor, patch = (int(p) for p in version.split("."))
code = major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch
cmd = "trtexec " + " ".join(sys.argv[1:])
print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # {cmd}")
if "help" in args:
    print("=== Model Options ===")
    sys.exit(0)
if os.environ.get("FAKE_TRTEXEC_OOM"):
    print("[E] Error[1]: [defaultAllocator.cpp::allocate::20] Error Code 1: Cuda Runtime (out of memory)")
    print("[E] Engine could not be created from network")
    print(f"&&&& FAILED TensorRT.trtexec [TensorRT v{code}] # {cmd}")
    sys.exit(1)

def dims(spec):
    name, shape = spec.rsplit(":", 1)
    return name, [int(d) for d in shape.split("x")]

if "saveEngine" in args:
    import onnx
    g = onnx.load(args["onnx"]).graph
    in_shape = [d.dim_value if d.HasField("dim_value") else -1 for d in g.input[0].type.tensor_type.shape.dim]
    profiles = []
    if "minShapes" in args:
        name, mn = dims(args["minShapes"]); _, opt = dims(args["optShapes"]); _, mx = dims(args["maxShapes"])
        profiles = [{name: [mn, opt, mx]}]
    header = {"version": version, "input": g.input[0].name, "in_shape": in_shape, "output": g.output[0].name,
              "profiles": profiles, "onnx": args["onnx"]}
    Path(args["saveEngine"]).write_bytes(b"FAKEPLAN" + json.dumps(header).encode())
if "exportOutput" in args:
    header = json.loads(Path(args["loadEngine"]).read_bytes()[8:])
    name, path = args["loadInputs"].rsplit(":", 1)
    shape = dims(args["shapes"])[1] if "shapes" in args else header["in_shape"]
    x = np.fromfile(path, dtype=np.float32).reshape(shape)
    if os.environ.get("FAKE_TRTEXEC_RUN_MODEL"):  # compute the real graph, for harness-level fidelity checks
        import onnxruntime as ort
        sess = ort.InferenceSession(header["onnx"], providers=["CPUExecutionProvider"])
        y = sess.run(None, {header["input"]: x})[0]
    else:
        y = x.reshape(len(x), -1).sum(axis=1)[:, None] * np.arange(1, 11, dtype=np.float32)
    Path(args["exportOutput"]).write_text(json.dumps(
        [{"name": header["output"], "dimensions": "x".join(map(str, y.shape)), "values": y.ravel().tolist()}]))
if "exportTimes" in args:
    Path(args["exportTimes"]).write_text(json.dumps(
        [{"count": 3}] + [{"startComputeMs": i, "latencyMs": 0.3 + 0.01 * i, "computeMs": 0.28} for i in range(3)]))
print(open(here / ("summary8.txt" if major == 8 else "summary10.txt")).read())
print(f"&&&& PASSED TensorRT.trtexec [TensorRT v{code}] # {cmd}")
'''


def install_fake_trtexec(directory) -> "Path":
    """Write an executable fake ``trtexec`` (and its transcripts) into ``directory``; returns its path."""
    import os
    from pathlib import Path

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary10.txt").write_text(TRTEXEC_SUMMARY_10X)
    (d / "summary8.txt").write_text(TRTEXEC_SUMMARY_8X)
    exe = d / "trtexec"
    exe.write_text(FAKE_TRTEXEC.replace("{python}", sys.executable))
    os.chmod(exe, 0o755)
    return exe


def trtexec_calls(directory) -> list[list[str]]:
    from pathlib import Path

    p = Path(directory) / "argv.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []
