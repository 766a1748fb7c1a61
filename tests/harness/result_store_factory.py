"""A small hand-made result store for the compare/plot/report tests (written like harness.store.writer writes it)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.store.records import JobRecord

NPU = {"name": "npu_x", "display_name": "NPU X (M.2)", "form_factor": "m2_npu",
       "backends": ["vendor_rt", "onnxruntime"], "precisions": ["int8"], "price_eur": 150.0,
       "typical_power_w": 5.0}
GPU = {"name": "gpu_y", "display_name": "GPU Y", "form_factor": "desktop_gpu",
       "backends": ["onnxruntime-cuda", "tensorrt"], "precisions": ["fp32", "fp16", "int8"], "price_eur": 1500.0}

MAP_CP = "ckpts/resnet20-fmnist-map.onnx"
QT_CP = "ckpts/resnet20-fmnist-quanttrim.onnx"


def rec(job_id: str, checkpoint: str, device: str, backend: str, precision: str, run_id: str = "run-a",
        status: str = "ok", **fields: Any) -> dict[str, Any]:
    return JobRecord(run_id=run_id, job_id=job_id, device=device, backend=backend, precision=precision,
                     checkpoint=checkpoint, status=status, **fields).to_dict()


def power(avg: float, peak: float, peak_mean: float, p5: float, p95: float, fps: float,
          estimated: bool = False) -> dict[str, Any]:
    return dict(power_avg_w=avg, power_peak_w=peak, power_peak_w_mean=peak_mean, power_p5_w=p5, power_p95_w=p95,
                energy_per_inference_mj=1000.0 * avg / fps, power_source="estimate" if estimated else "hwmon",
                power_estimated=estimated, power_sample_period_ms=10.0, power_samples=500)


def timing(p50: float, fps: float) -> dict[str, Any]:
    return dict(latency_ms_p50=p50, latency_ms_p90=p50 * 1.1, latency_ms_p95=p50 * 1.2, latency_ms_p99=p50 * 1.5,
                latency_ms_mean=p50 * 1.05, latency_ms_min=p50 * 0.9, latency_ms_max=p50 * 2.0, fps=fps,
                batch_size=1, warmup_iters=20, timed_iters=200, runs=5)


RUN_A = [
    rec("j1", MAP_CP, "npu_x", "vendor_rt", "int8", calibration_method="minmax", **timing(2.0, 500.0),
        **power(4.0, 5.0, 4.8, 3.5, 4.9, 500.0), top1=0.90, top1_agreement=0.95, logit_mse=0.20, snr_db=20.0,
        ece=0.03, brier=0.15),
    rec("j2", QT_CP, "npu_x", "vendor_rt", "int8", calibration_method="minmax", **timing(1.96, 510.0),
        **power(4.1, 5.2, 5.0, 3.6, 5.1, 510.0), top1=0.91, top1_agreement=0.98, logit_mse=0.05, snr_db=26.0,
        ece=0.02, brier=0.14),
    rec("j3", MAP_CP, "gpu_y", "onnxruntime-cuda", "fp16", **timing(1.0, 1000.0),
        **power(150.0, 190.0, 185.0, 140.0, 188.0, 1000.0), top1=0.92, top1_agreement=1.0, logit_mse=0.001,
        snr_db=50.0, ece=0.02, brier=0.12),
    rec("j4", QT_CP, "gpu_y", "onnxruntime-cuda", "fp16", **timing(1.0, 1000.0),
        **power(150.0, 190.0, 185.0, 140.0, 188.0, 1000.0), top1=0.92, top1_agreement=1.0, logit_mse=0.0008,
        snr_db=51.0, ece=0.02, brier=0.12),
    rec("j5", MAP_CP, "gpu_y", "tensorrt", "fp16", **timing(0.4, 2500.0),
        **power(120.0, 170.0, 165.0, 110.0, 168.0, 2500.0, estimated=True), top1=0.92, logit_mse=0.002),
    rec("j6", QT_CP, "gpu_y", "tensorrt", "int8", status="failed", failed_stage="compile",
        error_message="TensorRT builder returned no engine"),
]

#: A second run with a different metric set: mIoU instead of top-1, and no power source.
RUN_B = [
    rec("k1", "ckpts/unet-map.onnx", "npu_x", "vendor_rt", "int8", run_id="run-b", **timing(8.0, 125.0),
        miou=0.61, logit_mse=0.3, power_unavailable_reason="no power source on this host; tried: usb_meter"),
]


def manifest(run_id: str, devices: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"run_id": run_id, "command": ["python", "-m", "harness", "run", "--device", "npu_x"],
            "host": {"hostname": "testhost", "platform": "Linux-6.1-x86_64", "python": "3.11.2"},
            "packages": {"numpy": "2.1.0", "onnxruntime": "1.32.0"},
            "devices": {d["name"]: d for d in devices},
            "checkpoints": {MAP_CP: {"sha256": "aa" * 32, "recipe": "map"},
                            QT_CP: {"sha256": "bb" * 32, "recipe": "quanttrim"}}}


def write_run(root: Path, run_id: str, records: Sequence[dict[str, Any]], man: dict[str, Any] | None,
              latencies: dict[str, np.ndarray] | None = None, extra_lines: Sequence[str] = ()) -> Path:
    run = root / run_id
    run.mkdir(parents=True)
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    if man is not None:
        (run / "manifest.json").write_text(json.dumps(man, indent=1))
    if latencies:
        (run / "latencies").mkdir()
        for job, arr in latencies.items():
            np.save(run / "latencies" / f"{job}.npy", arr)
    return run


def make_store(root: Path, with_run_b: bool = True) -> Path:
    """results/ with run-a (two devices, MAP + Quant-Trim, raw latencies) and optionally run-b."""
    rng = np.random.default_rng(0)
    lat = {"j1": (rng.normal(2.0, 0.05, 200) * 1e6).astype(np.int64),
           "j3": (rng.normal(1.0, 0.02, 200) * 1e6).astype(np.int64),
           "j5": (rng.normal(0.4, 0.01, 200) * 1e6).astype(np.int64)}
    write_run(root, "run-a", RUN_A, manifest("run-a", [NPU, GPU]), lat)
    if with_run_b:
        write_run(root, "run-b", RUN_B, manifest("run-b", [NPU]))
    return root


def tiny_cnn(path: Path, seed: int, clip: float | None = None, torch_style_names: bool = False) -> Path:
    """A 3-layer CNN for [N,1,28,28] inputs (Conv-Relu-Conv-Relu-GAP-Gemm); ``clip`` pins the weight tails.

    ``torch_style_names``: anonymous initializers and "/layer1/..." node names, as torch's exporter writes
    them after folding BatchNorm.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    ws = {"conv1.weight": rng.standard_t(3, (4, 1, 3, 3)) * 0.3, "conv2.weight": rng.standard_t(3, (8, 4, 3, 3)) * 0.2,
          "fc.weight": rng.standard_t(3, (10, 8)) * 0.3}
    if clip is not None:
        ws = {k: np.clip(v, -clip, clip) for k, v in ws.items()}
    if torch_style_names:
        ws = {f"onnx::W_{i}": v for i, v in enumerate(ws.values())}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in ws.items()]
    w1, w2, w3 = list(ws)
    names = ("/stem/Conv", "/layer1/conv/Conv", "/fc/Gemm") if torch_style_names else ("", "", "")
    nodes = [helper.make_node("Conv", ["input", w1], ["c1"], pads=[1, 1, 1, 1], name=names[0]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", w2], ["c2"], pads=[1, 1, 1, 1], name=names[1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", w3], ["logits"], transB=1, name=names[2])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
