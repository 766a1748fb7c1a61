"""OpenVINO adapter: precision hints honoured and reported, NNCF INT8, ORT QDQ graphs, refusals."""
from __future__ import annotations

import numpy as np
import pytest

from backends.base import CompileConfig, RuntimeConfig, UnsupportedRequest
from backends.openvino_backend import OpenVinoBackend, unsupported_ops_from_error
from devices import load_device
from harness.scoring.metrics import snr_db
from tests.backends.tiny_onnx import images, ort_reference, run_all, tiny_cnn, unknown_op_model

AVAIL = OpenVinoBackend.availability()
needs_ov = pytest.mark.skipif(not AVAIL.available, reason=AVAIL.explain())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ov")
    return tiny_cnn(tmp / "tiny.onnx"), load_device("cpu"), tmp


def test_unsupported_ops_parsed_from_openvino_report():
    msg = "Model wasn't fully converted.\nSummary:\n-- No conversion rule found for operations: com.x.A, B\n\n"
    assert unsupported_ops_from_error(msg) == ["com.x.A", "B"]


@needs_ov
def test_fp32_runs_f32_and_matches_ort(setup):
    model, device, tmp = setup
    backend = OpenVinoBackend()
    compiled = backend.compile(model, device, CompileConfig("fp32"), None, tmp / "work")
    assert compiled.metadata["inference_precision_ran"] == "f32"
    x = images(8)
    session = backend.load(compiled, device, RuntimeConfig(threads=1))
    try:
        assert snr_db(run_all(session, x), ort_reference(model, x)) >= 60.0
    finally:
        session.close()


@needs_ov
def test_int8_nncf_records_method_and_is_close(setup):
    model, device, tmp = setup
    backend = OpenVinoBackend()
    config = CompileConfig("int8", calibration="minmax", calibration_samples=16)
    compiled = backend.compile(model, device, config, images(16, split_name="train"), tmp / "work")
    assert compiled.metadata["quantizer"] == "nncf"
    assert compiled.metadata["nncf_range_estimator"] == "MINMAX"
    assert compiled.path.with_suffix(".bin").exists()
    x = images(8)
    session = backend.load(compiled, device, RuntimeConfig(threads=1))
    try:
        assert snr_db(run_all(session, x), ort_reference(model, x)) > 15.0
    finally:
        session.close()


@needs_ov
def test_int8_second_compile_is_cached(setup):
    model, device, tmp = setup
    backend = OpenVinoBackend()
    config = CompileConfig("int8", calibration="minmax", calibration_samples=8)
    calib = images(8, split_name="train")
    backend.compile(model, device, config, calib, tmp / "cache")
    assert backend.compile(model, device, config, calib, tmp / "cache").metadata["cached"] is True


@needs_ov
def test_entropy_with_nncf_is_refused_naming_the_alternative(setup):
    model, device, tmp = setup
    with pytest.raises(UnsupportedRequest, match="quantizer=ort_qdq"):
        OpenVinoBackend().compile(model, device, CompileConfig("int8", calibration="entropy"),
                                  images(4, split_name="train"), tmp / "work")


@needs_ov
def test_ort_qdq_graph_runs_as_int8(setup):
    model, device, tmp = setup
    backend = OpenVinoBackend()
    config = CompileConfig("int8", calibration="minmax", calibration_samples=8, options=(("quantizer", "ort_qdq"),))
    compiled = backend.compile(model, device, config, images(8, split_name="train"), tmp / "work")
    assert compiled.metadata["quantizer"] == "ort_qdq"
    session = backend.load(compiled, device, RuntimeConfig(threads=1))
    try:
        x = images(4)
        assert snr_db(run_all(session, x), ort_reference(model, x)) > 15.0
    finally:
        session.close()


@needs_ov
def test_unknown_target_plugin_is_refused(setup):
    model, device, tmp = setup
    with pytest.raises(UnsupportedRequest, match="no NOSUCH plugin"):
        OpenVinoBackend().compile(model, device, CompileConfig("fp32", target="nosuch"), None, tmp / "work")


@needs_ov
def test_unknown_operator_is_named(setup, tmp_path):
    _, device, _ = setup
    bad = unknown_op_model(tmp_path / "bad.onnx")
    with pytest.raises(UnsupportedRequest, match="FancyOp"):
        OpenVinoBackend().compile(bad, device, CompileConfig("fp32"), None, tmp_path / "work")


@needs_ov
def test_session_handles_a_new_batch_size(setup):
    model, device, tmp = setup
    backend = OpenVinoBackend()
    session = backend.load(backend.compile(model, device, CompileConfig("fp32"), None, tmp / "work"), device,
                           RuntimeConfig())
    try:
        x = images(3)
        assert np.allclose(session.run({"input": x})[0], ort_reference(model, x), atol=1e-4)
    finally:
        session.close()


@needs_ov
def test_mse_calibration_uses_nncf_histogram_search(setup):
    model, device, tmp = setup
    compiled = OpenVinoBackend().compile(model, device, CompileConfig("int8", calibration="mse", calibration_samples=8),
                                         images(8, split_name="train"), tmp / "work")
    assert compiled.metadata["nncf_range_estimator"] == "HISTOGRAM"


@needs_ov
def test_fp16_runs_as_asked_or_is_refused(setup):
    model, device, tmp = setup
    backend = OpenVinoBackend()
    if "fp16" not in backend.capabilities().precisions:
        with pytest.raises(UnsupportedRequest, match="fp16"):
            backend.check_request(CompileConfig("fp16"))
        return
    try:
        compiled = backend.compile(model, device, CompileConfig("fp16"), None, tmp / "work")
    except UnsupportedRequest as exc:  # the plugin would run another precision: refused, not relabelled
        assert "runs" in str(exc)
        return
    assert compiled.metadata["inference_precision_ran"] == "f16"


@needs_ov
def test_unknown_preset_is_refused(setup):
    model, device, tmp = setup
    with pytest.raises(UnsupportedRequest, match="performance, mixed"):
        OpenVinoBackend().compile(model, device, CompileConfig("int8", options=(("preset", "fast"),)),
                                  images(4, split_name="train"), tmp / "work")


@needs_ov
def test_offline_sweep_adds_queued_points_over_the_throughput_streams(setup):
    from harness.bench import offline

    model, device, tmp = setup
    backend = OpenVinoBackend()
    session = backend.load(backend.compile(model, device, CompileConfig("fp32"), None, tmp / "work"), device,
                           RuntimeConfig(threads=2))
    try:
        cfg = offline.OfflineConfig(max_batch=2, warmup=1, iters=3, runs=1, requests_per_stream=2)
        result = offline.sweep(session, {"input": images(8)}, cfg)
    finally:
        session.close()
    queued = [p for p in result.points if p.mode == "queued"]
    assert [p.batch for p in result.points if p.mode == "sync"] == [1, 2]
    assert queued and all(p.streams >= 1 and p.samples_per_s > 0 for p in queued)
