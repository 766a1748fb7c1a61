"""Vendor NPU toolchains (qnn, vela, tpu-mlir) and their devices' emulated policies against FP32, in one process.

For each bundled checkpoint (MAP, Quant-Trim): compile at INT8 with the device profile's policy (granularity,
activation signedness), 256 calibration images drawn with seed 0 from the bundled sample's train split, run the
first N images of its test split and print one JSON line: SNR dB and top-1 agreement against the FP32 ONNX Runtime
reference, top-1, compile seconds, operator coverage, and Vela's estimated latency where there is one.

Run (each backend where it is available; tpu-mlir with its environment's interpreter):
    python benchmarks/bench_npu_numerics.py qnn snapdragon_8gen2
    python benchmarks/bench_npu_numerics.py vela imx93
    ~/.cache/quanttrim-harness/envs/tpu-mlir/bin/python benchmarks/bench_npu_numerics.py tpu-mlir bm1684x --images 200
    python benchmarks/bench_npu_numerics.py emulated snapdragon_8gen2   # the emulated policy, for the dB difference
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

ASSETS = Path(__file__).resolve().parents[1] / "harness" / "assets"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backend")
    ap.add_argument("device")
    ap.add_argument("--images", type=int, default=1000, help="test images scored (default: the whole sample)")
    ap.add_argument("--workdir", default=None, help="compile cache folder (default: a temporary one)")
    args = ap.parse_args()

    import backends
    from backends.base import CompileConfig, RuntimeConfig
    from devices import load_device
    from harness.data.datasets import load_bundled_sample
    from harness.scoring.metrics import classification_fidelity
    from tests.backends.tiny_onnx import artifact, ort_reference

    test, train = load_bundled_sample("test"), load_bundled_sample("train")
    x = np.ascontiguousarray(test.images[:args.images], np.float32)
    y = np.asarray(test.labels[:args.images])
    calib = np.ascontiguousarray(train.images[np.random.default_rng(0).choice(len(train), 256, replace=False)],
                                 np.float32)
    device = load_device(args.device)
    policy = device.policy("int8")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="npu-numerics-"))
    for name in ("map", "quanttrim"):
        model = artifact(ASSETS / f"resnet20-fmnist-{name}.onnx")
        ref = ort_reference(model, x)
        backend = backends.create_backend(args.backend)
        config = CompileConfig("int8", calibration_samples=len(calib), per_channel=policy.per_channel,
                               activation_signed=policy.activation_signed)
        t0 = time.perf_counter()
        compiled = backend.compile(model, device, config, calib, workdir)
        compile_s = time.perf_counter() - t0
        session = backend.load(compiled, device, RuntimeConfig(threads=1))
        try:
            out = np.concatenate([session.run({model.input_name: x[i:i + 1]})[0] for i in range(len(x))])
        finally:
            session.close()
        fid = classification_fidelity(out, ref, y)
        meta = compiled.metadata
        print(json.dumps({
            "backend": args.backend, "device": args.device, "checkpoint": name, "images": len(x),
            "snr_db": round(fid["snr_db"], 2), "top1_agreement": round(fid["top1_agreement"], 4),
            "top1": round(fid["top1"], 4), "fp32_top1": round(float((ref.argmax(1) == y).mean()), 4),
            "compile_s": round(compile_s, 1), "npu_op_share": meta.get("npu_op_share"),
            "fallback_ops": meta.get("fallback_ops"), "latency_kind": meta.get("latency_kind"),
            "estimated_latency_ms": (meta.get("external_timing") or {}).get("latency_ms_p50")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
