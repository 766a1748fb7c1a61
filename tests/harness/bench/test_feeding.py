"""Feeding any model: per-input feeds, every output in graph order, shapes fixed from the data, planning refusals."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from backends.onnxruntime_backend import OrtSession
from harness.bench import loadgen
from harness.bench.jobs import JobSpec
from harness.bench.options import BenchmarkOptions
from harness.bench.plan import model_refusal
from harness.bench.worker import run_measure, run_reference
from harness.model.checkpoint import load_checkpoint
from tests.harness.model import onnx_models as m

RNG = np.random.default_rng(0)


def test_two_inputs_feed_by_name_and_both_outputs_come_back_in_graph_order(tmp_path):
    path = m.two_inputs_two_outputs(tmp_path / "two.onnx")
    image = RNG.random((5, 1, 4, 4), dtype=np.float32)
    scale = RNG.random((5, 1), dtype=np.float32)
    session = OrtSession(path, ["CPUExecutionProvider"], 1)
    aux, logits = loadgen.run_outputs(session, {"scale": scale, "image": image}, batch=2)
    want_aux, want_logits = m.two_inputs_two_outputs_numpy(image, scale)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-6)  # the logits are the second output
    np.testing.assert_allclose(aux, want_aux, rtol=1e-6)


def _spec(tmp_path: Path, ckpt, images: np.ndarray, **kw) -> JobSpec:
    data = tmp_path / "data.npz"
    np.savez(data, eval_images=images, eval_labels=np.zeros(len(images), np.int64),
             calib_images=images[:2])
    fields = dict(run_id="r", job_id="j", mode="measure", device="cpu", backend="onnxruntime", precision="fp32",
                  checkpoint=ckpt.name, checkpoint_path=str(ckpt.path), calibration=None, per_channel=True,
                  activation_signed=False, data_path=str(data), reference_path=str(tmp_path / "ref.npz"),
                  result_path=str(tmp_path / "res.json"), stage_path=str(tmp_path / "stage"),
                  latency_path=str(tmp_path / "lat.npy"), workdir=str(tmp_path / "work"), warmup=1, iters=3, runs=1,
                  power_idle_s=0.0)
    fields.update(kw)
    if "model" not in kw:
        fields["model"] = ckpt.with_data_shapes({ckpt.input_name: images.shape[1:]}).to_dict()
    return JobSpec(**fields)


def test_reference_keeps_every_output_keyed_by_name(tmp_path):
    ckpt = load_checkpoint(m.one_input_two_outputs(tmp_path / "m.onnx"))
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    assert run_reference(_spec(tmp_path, ckpt, x, mode="reference"))["status"] == "ok"
    with np.load(tmp_path / "ref.npz") as ref:
        assert ref.files == ["features", "logits"]
        want = m.one_input_two_outputs_numpy(x)
        np.testing.assert_allclose(ref["logits"], want[1], rtol=1e-6)


def test_worker_feeds_the_image_input_when_weights_are_listed_first(tmp_path):
    ckpt = load_checkpoint(m.weights_listed_as_inputs(tmp_path / "old.onnx"))
    x = RNG.random((4, 1, 1, 1), dtype=np.float32)
    assert run_reference(_spec(tmp_path, ckpt, x, mode="reference"))["status"] == "ok"
    out = run_measure(_spec(tmp_path, ckpt, x))
    assert out["status"] == "ok", out.get("error_message")
    assert out["logit_mse"] == 0.0


def test_worker_runs_symbolic_height_width_at_the_data_size(tmp_path):
    ckpt = load_checkpoint(m.dynamic_hw_classifier(tmp_path / "dyn.onnx"))
    x = RNG.random((3, 2, 5, 7), dtype=np.float32)
    assert run_reference(_spec(tmp_path, ckpt, x, mode="reference"))["status"] == "ok"
    out = run_measure(_spec(tmp_path, ckpt, x))
    assert out["status"] == "ok", out.get("error_message")
    assert out["input_shapes"] == {"input": [2, 5, 7]}
    with np.load(tmp_path / "ref.npz") as ref:
        np.testing.assert_allclose(ref["logits"], m.dynamic_hw_numpy(x), rtol=1e-5)


def test_every_output_is_scored_and_the_logits_second_are_the_primary(tmp_path):
    import dataclasses

    from harness.model.card import ModelCard, OutputCard, infer_card

    ckpt = load_checkpoint(m.one_input_two_outputs(tmp_path / "m.onnx"))
    inferred = infer_card(ckpt)
    card = ModelCard(inferred.inputs, (OutputCard("features", "embedding"), OutputCard("logits", "logits")))
    ckpt = dataclasses.replace(ckpt, card=card)
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    assert run_reference(_spec(tmp_path, ckpt, x, mode="reference"))["status"] == "ok"
    out = run_measure(_spec(tmp_path, ckpt, x))
    assert out["status"] == "ok", out.get("error_message")
    assert [o["name"] for o in out["outputs"]] == ["features", "logits"]
    assert out["primary_output"] == "logits" and out["top1_agreement"] == 1.0


def test_batch_larger_than_the_graphs_fixed_batch_is_refused_at_planning(tmp_path):
    ckpt = load_checkpoint(m.dynamic_hw_classifier(tmp_path / "b2.onnx", batch=2))
    assert model_refusal(ckpt, BenchmarkOptions(batch=2)) is None
    assert "fixes its batch at 2" in model_refusal(ckpt, BenchmarkOptions(batch=4))


def test_fixed_batch_model_is_validated_with_its_last_batch_padded(tmp_path):
    path = m.dynamic_hw_classifier(tmp_path / "b2.onnx", batch=2)
    x = RNG.random((5, 2, 3, 3), dtype=np.float32)
    (logits,) = loadgen.run_outputs(OrtSession(path, ["CPUExecutionProvider"], 1), {"input": x}, 2, pad_last=True)
    np.testing.assert_allclose(logits, m.dynamic_hw_numpy(x), rtol=1e-5)


@pytest.fixture
def ov_backend():
    from backends.openvino_backend import OpenVinoBackend

    avail = OpenVinoBackend.availability()
    if not avail.available:
        pytest.skip(f"openvino: {avail.explain()}")
    return OpenVinoBackend()


def test_openvino_runs_two_inputs_and_two_outputs(tmp_path, ov_backend):
    from backends.base import CompileConfig, RuntimeConfig
    from devices import load_device

    ckpt = load_checkpoint(m.two_inputs_two_outputs(tmp_path / "two.onnx"))
    art = ckpt.with_data_shapes({"image": (1, 4, 4), "scale": (1,)}).artifact()
    device = load_device("cpu")
    compiled = ov_backend.compile(art, device, CompileConfig("fp32"), None, tmp_path / "work")
    image, scale = RNG.random((3, 1, 4, 4), dtype=np.float32), RNG.random((3, 1), dtype=np.float32)
    outs = loadgen.run_outputs(ov_backend.load(compiled, device, RuntimeConfig(1)), {"image": image, "scale": scale}, 3)
    for got, want in zip(outs, m.two_inputs_two_outputs_numpy(image, scale)):
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_openvino_compiles_symbolic_height_width_at_the_data_size(tmp_path, ov_backend):
    from backends.base import CompileConfig, RuntimeConfig
    from devices import load_device

    ckpt = load_checkpoint(m.dynamic_hw_classifier(tmp_path / "dyn.onnx")).with_data_shapes({"input": (2, 6, 9)})
    device = load_device("cpu")
    compiled = ov_backend.compile(ckpt.artifact(), device, CompileConfig("fp32"), None, tmp_path / "work")
    x = RNG.random((2, 2, 6, 9), dtype=np.float32)
    (logits,) = loadgen.run_outputs(ov_backend.load(compiled, device, RuntimeConfig(1)), {"input": x}, 1)
    np.testing.assert_allclose(logits, m.dynamic_hw_numpy(x), rtol=1e-5)


def test_tflite_checkpoint_runs_on_litert_against_its_litert_fp32_reference(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed")
    from harness.data.loaders import Dataset, save_job_data
    from tests.harness.model import tflite_models

    ckpt = load_checkpoint(tflite_models.two_inputs_two_outputs(tmp_path / "m.tflite"))
    a, b = RNG.random((4, 3), dtype=np.float32), RNG.random((4, 3), dtype=np.float32)
    data = save_job_data(tmp_path / "job.npz", Dataset({"a": a, "b": b}, None, "test arrays"), None)
    spec = _spec(tmp_path, ckpt, a, data_path=str(data), backend="litert",
                 model=ckpt.with_data_shapes({"a": (3,), "b": (3,)}).to_dict())
    ref = run_reference(dataclasses.replace(spec, mode="reference"))
    assert ref["status"] == "ok" and ref["reference_runtime"] == "LiteRT FP32"
    with np.load(tmp_path / "ref.npz") as z:
        np.testing.assert_allclose(z["prod"], a * b, rtol=1e-6)
        np.testing.assert_allclose(z["sum"], a + b, rtol=1e-6)
    out = run_measure(spec)
    assert out["status"] == "ok", out.get("error_message")
    assert [o["name"] for o in out["outputs"]] == ["prod", "sum"] and out["exact_match"] is True


def test_tflite_checkpoint_is_refused_on_other_backends_at_planning(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed")
    from tests.harness.model import tflite_models

    ckpt = load_checkpoint(tflite_models.two_inputs_two_outputs(tmp_path / "m.tflite"))
    assert model_refusal(ckpt, BenchmarkOptions(), "litert", "fp32") is None
    assert "runs as it is on litert fp32 only" in model_refusal(ckpt, BenchmarkOptions(), "onnxruntime", "fp32")
    assert "litert fp32 only" in model_refusal(ckpt, BenchmarkOptions(), "litert", "int8")


def test_two_input_model_calibrates_from_one_array_per_input(tmp_path):
    from backends.base import CompileConfig, RuntimeConfig
    from backends.onnxruntime_backend import OnnxRuntimeBackend
    from devices import load_device

    ckpt = load_checkpoint(m.two_inputs_two_outputs(tmp_path / "two.onnx"))
    art = ckpt.with_data_shapes({"image": (1, 4, 4), "scale": (1,)}).artifact()
    rng = np.random.default_rng(7)
    calib = {"image": rng.random((8, 1, 4, 4), dtype=np.float32), "scale": rng.random((8, 1), dtype=np.float32)}
    backend, device = OnnxRuntimeBackend(), load_device("cpu")
    compiled = backend.compile(art, device, CompileConfig("int8", calibration="minmax", calibration_samples=8),
                               calib, tmp_path / "work")
    image, scale = calib["image"][:3], calib["scale"][:3]  # inside the calibrated ranges: no clipping
    aux, logits = loadgen.run_outputs(backend.load(compiled, device, RuntimeConfig(1)), {"image": image, "scale": scale}, 3)
    want_aux, want_logits = m.two_inputs_two_outputs_numpy(image, scale)
    assert compiled.metadata["cached"] is False
    np.testing.assert_allclose(logits, want_logits, atol=0.05)  # INT8: within a few quantization steps
    np.testing.assert_allclose(aux, want_aux, atol=0.05)
