"""Model choice shared by the backend benchmarks: --model, else the bundled MAP checkpoint, else an untrained
ResNet-20 (Fashion-MNIST shape) exported from quanttrim's model zoo (latency needs the shape, not the weights)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def bench_model(given: str | None, workdir: Path) -> Path:
    if given:
        return Path(given)
    bundled = ROOT / "harness" / "assets" / "resnet20-fmnist-map.onnx"
    if bundled.exists():
        return bundled
    out = Path(workdir) / "resnet20-untrained.onnx"
    if out.exists():
        return out
    import torch

    from quanttrim.models.resnet import resnet20

    torch.manual_seed(0)
    net = resnet20(10, 1, 28, mean=[0.2860], std=[0.3530]).eval()
    torch.onnx.export(net, torch.rand(1, 1, 28, 28), str(out), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    print(f"(no bundled checkpoint yet: using an untrained ResNet-20 exported to {out})")
    return out


def artifact(path: Path):
    from harness.model.checkpoint import load_checkpoint

    return load_checkpoint(path).artifact()


def eval_images(n: int):
    from harness.data.datasets import load_bundled_sample

    return load_bundled_sample("test").images[:n]


def calib_images(n: int):
    from harness.data.datasets import calibration_subset, load_bundled_sample

    return calibration_subset(load_bundled_sample("train"), n)
