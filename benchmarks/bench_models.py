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


def cnn224(workdir: Path, seed: int = 0) -> Path:
    """A small 224x224 RGB classifier made here (no model hub): five 3x3 conv+ReLU layers (stride 2 but the
    last; 3->16->32->64->128->128 channels), global average pool, a 10-way Gemm; He-initialised, opset 17,
    dynamic batch. ~0.14 GMAC per image: a stand-in for a 224² model where latency needs the shape only."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = Path(workdir) / f"cnn224-s{seed}.onnx"
    if out.exists():
        return out
    rng = np.random.default_rng(seed)
    chans, nodes, inits, prev = [3, 16, 32, 64, 128, 128], [], [], "input"
    for i, (cin, cout) in enumerate(zip(chans, chans[1:])):
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")]
        stride = 1 if i == len(chans) - 2 else 2
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1],
                                   strides=[stride, stride]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev = f"r{i}"
    fc = (rng.standard_normal((10, chans[-1])) * np.sqrt(1.0 / chans[-1])).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc_w"), numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")]
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "cnn224", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def random_images(shape: tuple[int, ...], n: int, seed: int = 0):
    """n images of `shape` (C, H, W), uniform in [0, 1), float32: timing input for a model without data."""
    import numpy as np

    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)
