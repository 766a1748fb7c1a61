"""LiteRT adapter: refusal without a Python >= 3.12 converter, onnx2tf conversion, NHWC and int8 I/O handling."""
from __future__ import annotations

import numpy as np
import pytest

from backends.base import CompileConfig, RuntimeConfig, UnsupportedRequest
from backends.litert_backend import LiteRtBackend, converter_status
from devices import load_device
from backends.environments import ENV_ROOT_VARIABLE
from harness.scoring.metrics import snr_db
from tests.backends.tiny_onnx import images, ort_reference, run_all, tiny_cnn, unknown_op_model

AVAIL = LiteRtBackend.availability()
needs_litert = pytest.mark.skipif(not AVAIL.available, reason=AVAIL.explain())
_exe, _reason, _fix = converter_status()
needs_converter = pytest.mark.skipif(_exe is None, reason=f"{_reason}; fix: {_fix}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("litert")
    return tiny_cnn(tmp / "tiny.onnx"), load_device("cpu"), tmp


def test_onnx_without_converter_env_is_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_ROOT_VARIABLE, str(tmp_path / "envs"))
    monkeypatch.setattr("backends.environments.find_python", lambda spec: "/usr/bin/python3.12")
    with pytest.raises(UnsupportedRequest, match="Python >= 3.12.*env setup litert-converter"):
        LiteRtBackend().compile(tiny_cnn(tmp_path / "m.onnx"), load_device("cpu"), CompileConfig("fp32"), None,
                                tmp_path / "work")


def test_without_python_3_12_the_reason_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_ROOT_VARIABLE, str(tmp_path / "envs"))
    monkeypatch.setattr("backends.environments.find_python", lambda spec: None)
    _, reason, fix = converter_status()
    assert "no Python >= 3.12 is installed" in reason and fix.startswith("install Python 3.12")


def test_entropy_calibration_is_refused():
    with pytest.raises(UnsupportedRequest, match="entropy"):
        LiteRtBackend().check_request(CompileConfig("int8", calibration="entropy"))


def test_missing_prebuilt_tflite_is_refused(tmp_path):
    config = CompileConfig("fp32", options=(("tflite_model", str(tmp_path / "nope.tflite")),))
    with pytest.raises(UnsupportedRequest, match="does not exist"):
        LiteRtBackend().compile(tiny_cnn(tmp_path / "m.onnx"), load_device("cpu"), config, None, tmp_path / "work")


@needs_litert
@needs_converter
def test_fp32_conversion_matches_ort(setup):
    model, device, tmp = setup
    backend = LiteRtBackend()
    compiled = backend.compile(model, device, CompileConfig("fp32"), None, tmp / "work")
    session = backend.load(compiled, device, RuntimeConfig(threads=1))
    try:
        x = images(4)
        assert snr_db(session.run({"input": x})[0], ort_reference(model, x)) >= 60.0
    finally:
        session.close()


@needs_litert
@needs_converter
def test_full_int8_model_quantizes_io_and_stays_close(setup):
    model, device, tmp = setup
    backend = LiteRtBackend()
    compiled = backend.compile(model, device, CompileConfig("int8", calibration_samples=16),
                               images(16, split_name="train"), tmp / "work")
    session = backend.load(compiled, device, RuntimeConfig(threads=1))
    try:
        assert session._ins[0]["dtype"] == np.int8
        x = images(4)
        assert snr_db(run_all(session, x), ort_reference(model, x)) > 12.0
    finally:
        session.close()


@needs_litert
@needs_converter
def test_prebuilt_tflite_runs_without_conversion(setup):
    model, device, tmp = setup
    backend = LiteRtBackend()
    built = backend.compile(model, device, CompileConfig("fp32"), None, tmp / "work")
    again = backend.compile(model, device, CompileConfig("fp32", options=(("tflite_model", str(built.path)),)), None,
                            tmp / "other")
    assert again.path == built.path and again.metadata["source"] == "prebuilt .tflite"


@needs_litert
@needs_converter
@needs_litert
@needs_converter
def test_an_op_the_int8_quantizer_cannot_take_is_named(tmp_path):
    # onnx2tf turns the input Clip(0, 1) into RELU_0_TO_1, which its strict full-INT8 builder refuses.
    model = tiny_cnn(tmp_path / "clip.onnx", input_clip=(0.0, 1.0))
    with pytest.raises(UnsupportedRequest, match="cannot quantize TFLite op RELU_0_TO_1"):
        LiteRtBackend().compile(model, load_device("cpu"), CompileConfig("int8", calibration_samples=16),
                                images(16), tmp_path / "work")


def test_unknown_operator_is_named(tmp_path):
    with pytest.raises(UnsupportedRequest, match="FancyOp"):
        LiteRtBackend().compile(unknown_op_model(tmp_path / "bad.onnx"), load_device("cpu"), CompileConfig("fp32"),
                                None, tmp_path / "work")


@needs_litert
def test_session_returns_outputs_in_the_onnx_order_by_name(tmp_path):
    from backends.litert_backend import LiteRtSession
    from tests.harness.model import tflite_models

    path = tflite_models.two_inputs_two_outputs(tmp_path / "m.tflite")  # interpreter order: prod, sum
    a, b = np.full((2, 3), 2.0, np.float32), np.full((2, 3), 3.0, np.float32)
    total, product = LiteRtSession(path, 1, nchw=False, input_names=["a", "b"],
                                   output_names=["sum", "prod"]).run({"a": a, "b": b})
    assert total.tolist() == [[5.0] * 3] * 2 and product.tolist() == [[6.0] * 3] * 2


@needs_litert
def test_session_refuses_to_guess_which_output_is_which(tmp_path):
    from backends.litert_backend import LiteRtSession
    from tests.harness.model import tflite_models

    path = tflite_models.two_inputs_two_outputs(tmp_path / "m.tflite")
    with pytest.raises(UnsupportedRequest, match="cannot tell which is which"):
        LiteRtSession(path, 1, nchw=False, input_names=["a", "b"], output_names=["logits", "boxes"])


@needs_litert
@needs_converter
def test_fp16_is_served_from_the_fp32_conversion_without_converting_again(setup):
    model, device, tmp = setup
    backend = LiteRtBackend()
    backend.compile(model, device, CompileConfig("fp32"), None, tmp / "shared")
    fp16 = backend.compile(model, device, CompileConfig("fp16"), None, tmp / "shared")
    assert fp16.path.name == "model_float16.tflite" and fp16.metadata["cached"] is True
    assert fp16.metadata["converted_with"] == "fp32"


def test_available_without_the_converter_says_it_runs_tflite_only_and_how_to_convert(tmp_path, monkeypatch):
    pytest.importorskip("ai_edge_litert", reason=AVAIL.explain())
    monkeypatch.setenv(ENV_ROOT_VARIABLE, str(tmp_path / "envs"))
    monkeypatch.setattr("backends.environments.find_python", lambda spec: "/usr/bin/python3.12")
    avail = LiteRtBackend.availability()
    assert avail.available
    assert avail.reason.startswith("runs .tflite models only:") and "env setup litert-converter" in avail.reason
