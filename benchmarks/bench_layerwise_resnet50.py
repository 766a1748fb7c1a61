"""Per-layer analysis on ResNet-50 at 224x224 with 64 inputs: wall time and peak memory.

Usage: python benchmarks/bench_layerwise_resnet50.py [--inputs 64] [--device hardware_a] [--precision int8]
       [--max-batch-mb 256] [--threads N]

ResNet-50 is built in-process with PyTorch (the quanttrim model zoo when importable, else a local
definition), its BatchNorm statistics re-estimated on a few random batches, exported to ONNX opset 17
and analysed with the `emulated` backend under the device's policy. Inputs are smooth synthetic
images (no ImageNet here): the figures are about cost, not accuracy. The analysis streams
intermediates batch by batch; the "hold everything" line shows what keeping every intermediate of
every input would need.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _resnet50_local():
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, planes: int, stride: int) -> None:
            super().__init__()
            out = planes * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
                nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
                nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out))
            self.short = nn.Identity() if stride == 1 and cin == out else nn.Sequential(
                nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.body(x) + self.short(x))

    layers, cin, blocks = [3, 4, 6, 3], 64, []
    for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
        for j in range(n):
            blocks.append(Bottleneck(cin, planes, 2 if i > 0 and j == 0 else 1))
            cin = planes * 4
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000))


def build_resnet50_onnx(path: Path, seed: int = 0) -> str:
    import torch

    torch.manual_seed(seed)
    try:
        from quanttrim.models import build_model

        model, origin = build_model("resnet50", num_classes=1000, in_channels=3, image_size=224), "quanttrim zoo"
    except Exception as exc:  # the zoo is optional here: fall back to a local ResNet-50
        model, origin = _resnet50_local(), f"local definition ({type(exc).__name__} from quanttrim zoo)"
    model.train()
    with torch.no_grad():  # realistic BatchNorm statistics instead of the identity defaults
        for _ in range(4):
            model(torch.from_numpy(smooth_images(8, seed=100 + _)))
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 3, 224, 224), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    return origin


def smooth_images(n: int, seed: int) -> np.ndarray:
    """Low-frequency random images in [0, 1] (bilinear upsampling of 7x7 noise)."""
    rng = np.random.default_rng(seed)
    small = rng.random((n, 3, 7, 7)).astype(np.float32)
    x = np.repeat(np.repeat(small, 32, axis=2), 32, axis=3)
    k = np.ones(9, np.float32) / 9  # a little blur so edges are not pure steps
    x = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 3, x)
    return np.clip(x + rng.normal(0, 0.02, x.shape), 0, 1).astype(np.float32)


class PeakRss:
    """Samples the process RSS every 20 ms (ru_maxrss only ever grows, so it cannot isolate a phase)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> "PeakRss":
        self.start = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--device", default="hardware_a")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--max-batch-mb", type=float, default=256.0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from backends import create_backend
    from backends.base import CompileConfig
    from devices.loader import load_device
    from harness.analysis.layer_graphs import _per_input_elements
    from harness.analysis.layerwise import analyze_onnx_pair
    from harness.model.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="bench-layerwise-") as tmp:
        tmp_path = Path(tmp)
        onnx_path = tmp_path / "resnet50.onnx"
        t0 = time.perf_counter()
        origin = build_resnet50_onnx(onnx_path)
        t_build = time.perf_counter() - t0
        images = smooth_images(args.inputs, seed=1)
        calib = smooth_images(64, seed=2)
        device = load_device(args.device)
        art = load_checkpoint(onnx_path).artifact()
        backend = create_backend("emulated")
        policy = device.policy(args.precision)
        t0 = time.perf_counter()
        compiled = backend.compile(art, device, CompileConfig(
            precision=args.precision, per_channel=policy.weight_granularity == "per_channel"), calib, tmp_path / "w")
        t_compile = time.perf_counter() - t0
        fp32_path = compiled.path.parent / "preprocessed.onnx"
        import onnx

        elems = _per_input_elements(onnx.load(str(fp32_path)))
        with PeakRss() as mem:
            t0 = time.perf_counter()
            rows, batch, notes = analyze_onnx_pair(fp32_path, compiled.path, images, "input",
                                                   max_batch_bytes=int(args.max_batch_mb * 2**20), threads=args.threads)
            t_analysis = time.perf_counter() - t0
        names = {r.tensor for r in rows}
        hold_all = 4 * 3 * args.inputs * sum(v for k, v in elems.items() if k in names)
        mib = 2**20
        print(f"model: ResNet-50 224x224 ({origin}), {len(rows)} intermediate tensors analysed")
        print(f"policy: {args.device}/{args.precision} ({policy.weight_granularity} weights, {policy.activation} "
              f"activations, {policy.calibration_method} over {len(calib)} images)")
        print(f"inputs: {args.inputs}, batch {batch} (budget {args.max_batch_mb:.0f} MiB per batch of intermediates)")
        print(f"build+export: {t_build:.1f} s   emulated compile (calibration + QDQ): {t_compile:.1f} s")
        print(f"per-layer analysis: {t_analysis:.1f} s ({1000 * t_analysis / args.inputs:.0f} ms per input); "
              f"host: {os.cpu_count()} CPUs, 1-min load average {os.getloadavg()[0]:.1f} at the end")
        print(f"RSS before analysis: {mem.start / mib:.0f} MiB   peak during analysis: {mem.peak / mib:.0f} MiB "
              f"(+{(mem.peak - mem.start) / mib:.0f} MiB)")
        print(f"process max RSS (ru_maxrss, whole run): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        print(f"holding every intermediate of every input (FP32 + single + entire) would need {hold_all / mib:.0f} MiB")
        worst = rows[:5]
        print("worst layers (single-layer SNR dB / entire SNR dB):")
        for r in worst:
            print(f"  {r.tensor:40s} {r.op_type:12s} {r.single_snr_db:7.2f} / {r.snr_db if r.snr_db is not None else float('nan'):7.2f}")
        for n in notes:
            print("note:", n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
