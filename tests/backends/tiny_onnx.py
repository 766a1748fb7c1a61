"""Small in-process ONNX models for backend tests (not a test module: imported by the backend tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backends.base import ModelArtifact

ASSETS = Path(__file__).resolve().parents[2] / "harness" / "assets"
BUNDLED = ("resnet20-fmnist-map.onnx", "resnet20-fmnist-quanttrim.onnx")


def tiny_cnn(path: Path, ir_version: int = 8, opset: int = 17, batch: int | str = "N",
             input_clip: tuple[float, float] | None = None, weights_as_constants: bool = False) -> ModelArtifact:
    """Conv-ReLU-Conv(stride 2)-ReLU-GAP-Gemm on [N, 1, 28, 28] -> [N, 10], fixed random weights; ``input_clip``
    puts a Clip(lo, hi) on the input first (as the Quant-Trim export's input clamp); ``weights_as_constants``
    stores every weight as a Constant node (paddle2onnx's export)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, shape: tuple[int, ...], std: float) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0.0, std, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "Wf", "Bf"], ["logits"], transB=1),
    ]
    extra = []
    if input_clip is not None:
        nodes.insert(0, helper.make_node("Clip", ["input", "clip_lo", "clip_hi"], ["input_clipped"]))
        nodes[1].input[0] = "input_clipped"
        extra = [numpy_helper.from_array(np.float32(input_clip[0]), "clip_lo"),
                 numpy_helper.from_array(np.float32(input_clip[1]), "clip_hi")]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        [init("W1", (8, 1, 3, 3), 0.3), init("B1", (8,), 0.1), init("W2", (8, 8, 3, 3), 0.2),
         init("B2", (8,), 0.1), init("Wf", (10, 8), 0.3), init("Bf", (10,), 0.1), *extra],
    )
    if weights_as_constants:   # as paddle2onnx exports: every weight a Constant node, no initializer
        consts = [helper.make_node("Constant", [], [t.name], value=t) for t in graph.initializer]
        del graph.initializer[:]
        nodes_now = list(graph.node)
        del graph.node[:]
        graph.node.extend(consts + nodes_now)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    onnx.save(model, str(path))
    return artifact(path)


def unknown_op_model(path: Path, op: str = "FancyOp") -> ModelArtifact:
    """A graph whose only node is an operator no toolchain knows (domain com.example)."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node(op, ["input"], ["logits"], domain="com.example")
    graph = helper.make_graph(
        [node], "bad", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
                              ir_version=8)
    onnx.save(model, str(path))
    return artifact(path)


def artifact(path: Path, name: str | None = None, **fields) -> ModelArtifact:
    """The model as the harness hands it to backends (harness.model's one model object); ``fields`` replace
    some of its fields (qdq_path, calibration_table, ...)."""
    import dataclasses

    from harness.model.checkpoint import load_checkpoint

    art = load_checkpoint(path).artifact()
    return dataclasses.replace(art, name=name or art.name, **fields)


def bundled_or_tiny(tmp_path: Path) -> ModelArtifact:
    """The bundled MAP checkpoint when it exists (being trained elsewhere), else the tiny CNN."""
    for name in BUNDLED:
        if (ASSETS / name).exists():
            return artifact(ASSETS / name)
    return tiny_cnn(tmp_path / "tiny.onnx")


def images(n: int, seed: int = 0, split_name: str = "test") -> np.ndarray:
    """Fashion-MNIST images from the bundled sample (float32 NCHW in [0, 1]); calibration uses "train"."""
    from harness.data.datasets import load_bundled_sample

    split = load_bundled_sample(split_name)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(split), size=n, replace=False)
    return np.ascontiguousarray(split.images[idx], dtype=np.float32)


def labels_for(n: int, seed: int = 0) -> np.ndarray:
    from harness.data.datasets import load_bundled_sample

    split = load_bundled_sample("test")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(split), size=n, replace=False)
    return np.asarray(split.labels[idx])


def ort_reference(model: ModelArtifact, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {model.input_name: x[i:i + 1]})[0] for i in range(len(x))])


def run_all(session, x: np.ndarray, input_name: str = "input") -> np.ndarray:
    """The first output over the images, one image per run() (the Session contract: feeds dict in, list out)."""
    return np.concatenate([session.run({input_name: x[i:i + 1]})[0] for i in range(len(x))])


def compile_tiny(backend, device: str, tmp: Path, precision: str = "int8", samples: int = 16) -> tuple:
    """The tiny CNN (``tmp/m.onnx``) compiled by ``backend`` for the bundled profile ``device`` at ``precision``,
    calibrated on ``samples`` train images, in ``tmp/work``: (model, device profile, compiled artifact)."""
    from backends.base import CompileConfig
    from devices import load_device

    model = tiny_cnn(tmp / "m.onnx")
    profile = load_device(device)
    return model, profile, backend.compile(model, profile, CompileConfig(precision, calibration_samples=samples),
                                           images(samples, split_name="train"), tmp / "work")


def run_batch(backend, compiled, device, model: ModelArtifact, n: int) -> list[np.ndarray]:
    """Every output of one run() over ``n`` test images, ``compiled`` loaded by ``backend`` on one thread; the
    session is closed either way."""
    from backends.base import RuntimeConfig

    session = backend.load(compiled, device, RuntimeConfig(threads=1))
    try:
        return session.run({model.input_name: images(n)})
    finally:
        session.close()


def snr_vs_ort(backend, compiled, device, model: ModelArtifact, n: int) -> float:
    """SNR (dB) of ``compiled``, loaded by ``backend`` on one thread, over ``n`` test images, one per run(),
    against the FP32 ONNX Runtime reference of ``model``; the session is closed either way."""
    from backends.base import RuntimeConfig
    from harness.scoring.metrics import snr_db

    session = backend.load(compiled, device, RuntimeConfig(threads=1))
    try:
        x = images(n)
        return snr_db(run_all(session, x), ort_reference(model, x))
    finally:
        session.close()


def first_output(session, x: np.ndarray, input_name: str = "input") -> np.ndarray:
    """run() on one feed, its first output."""
    outputs = session.run({input_name: x})
    assert isinstance(outputs, list), "Session.run returns a list of outputs"
    return outputs[0]


def device_for(backend: str) -> str:
    """The host profile when it lists the backend, else the first profile that does (rknn -> rk3588)."""
    from devices.loader import available_device_names, load_device

    names = available_device_names()
    if "cpu" in names and backend in load_device("cpu").backends:
        return "cpu"
    for name in names:
        try:
            if backend in load_device(name).backends:
                return name
        except Exception:  # a profile another engineer is editing must not break this choice
            continue
    return "cpu"


def compile_and_run(backend: str, device: str, model_path: Path, precision: str, calib: np.ndarray | None,
                    x: np.ndarray, workdir: Path) -> tuple[np.ndarray, dict]:
    """Compile ``model_path`` at ``precision`` with ``backend`` and run ``x`` one image at a time."""
    from backends import create_backend
    from backends.base import CompileConfig, RuntimeConfig
    from devices import load_device

    b = create_backend(backend)
    dev = load_device(device)
    config = CompileConfig(precision, calibration_samples=len(calib) if calib is not None else 1)
    compiled = b.compile(artifact(Path(model_path)), dev, config, calib, Path(workdir))
    session = b.load(compiled, dev, RuntimeConfig(threads=1))
    try:
        return run_all(session, x), {k: v for k, v in compiled.metadata.items() if isinstance(v, (str, int, float, bool))}
    finally:
        session.close()


def child_main(job_path: str) -> None:
    """Entry for running compile_and_run in a backend's own interpreter (the contract test's subprocess)."""
    import json

    job = json.loads(Path(job_path).read_text())
    calib = np.load(job["calib"]) if job.get("calib") else None
    out, meta = compile_and_run(job["backend"], job["device"], Path(job["model"]), job["precision"], calib,
                                np.load(job["x"]), Path(job["workdir"]))
    np.save(job["out"], out)
    Path(job["meta"]).write_text(json.dumps(meta))
