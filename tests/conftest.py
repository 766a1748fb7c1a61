"""Shared test fixtures: small ONNX models built in-process (no framework needed)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def make_tiny_cnn(path: Path, channels: int = 1, size: int = 28, classes: int = 10, seed: int = 0) -> Path:
    """Conv → Relu → Conv → Relu → GlobalAveragePool → Flatten → Gemm, input "input" [N, C, H, W]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, channels, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 8).astype(np.float32)
    w2 = rng.normal(0, 0.3, (16, 8, 3, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 16).astype(np.float32)
    wf = rng.normal(0, 0.5, (classes, 16)).astype(np.float32)
    bf = rng.normal(0, 0.1, classes).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (wf, "wf"), (bf, "bf")]]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


ORT_ONLY_PROFILE = """name = "ortonly"
display_name = "Host CPU, ONNX Runtime only"
form_factor = "host_cpu"
backends = ["onnxruntime"]
precisions = ["fp32", "int8"]
"""


def write_ort_only_profile(folder: Path) -> Path:
    """``folder/ortonly.toml``: a host-CPU device profile with ONNX Runtime only (FP32 and INT8), for studies
    that must not wait on other backends."""
    path = Path(folder) / "ortonly.toml"
    path.write_text(ORT_ONLY_PROFILE)
    return path


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return make_tiny_cnn(tmp_path / "tiny.onnx")


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(1).random((64, 1, 28, 28), dtype=np.float32)
