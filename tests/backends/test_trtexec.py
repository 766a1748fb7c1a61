"""trtexec route: transcript parsing, command lines, INT8 scale sources, and both fidelity paths (fake trtexec)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.backends import nvidia_fakes as nf  # noqa: E402
from tests.backends import trtexec_fake as tf  # noqa: E402

from backends.base import CompileConfig, RuntimeConfig, UnsupportedRequest  # noqa: E402
from backends.tensorrt_backend import EngineBuildError, TensorRTSession  # noqa: E402
from backends.tensorrt_int8 import calibration_cache_path  # noqa: E402
from backends.trtexec_backend import TrtexecBackend, TrtexecSession, find_trtexec, parse_summary  # noqa: E402
from backends.trtexec_backend import parse_trtexec_version, summary_to_record  # noqa: E402
from devices.loader import load_device  # noqa: E402


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    d = tmp_path / "tensorrt-bin"
    tf.install_fake_trtexec(d)
    monkeypatch.setattr(TrtexecBackend, "search_dirs", (str(d),))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no other trtexec can shadow the fake
    nf.install(monkeypatch, None, None)  # no TensorRT Python bindings: trtexec only
    return d


@pytest.fixture
def model(tmp_path):
    return nf.make_artifact(nf.make_onnx_model(tmp_path / "tiny.onnx"))


@pytest.fixture
def orin():
    return load_device("jetson_orin")


def compile_(model, orin, tmp_path, calib=None, **cfg):
    options = cfg.pop("options", {})
    return TrtexecBackend().compile(model, orin, CompileConfig(options=tuple(options.items()), **cfg), calib,
                                    tmp_path / "work")


# -- parsing ---------------------------------------------------------------------------------------
def test_parse_summary_10x():
    s = parse_summary("[I] building...\n" + tf.TRTEXEC_SUMMARY_10X)
    assert s["throughput_qps"] == 2870.12
    assert s["latency_ms"] == {"min": 0.321, "max": 0.912, "mean": 0.3476, "median": 0.3412, "p90": 0.3588,
                               "p95": 0.3701, "p99": 0.4523}
    assert s["gpu_compute_ms"]["median"] == 0.3243 and s["h2d_ms"]["p99"] == 0.0142
    assert s["total_host_walltime_s"] == 0.348 and s["total_gpu_compute_s"] == 0.3301


def test_parse_summary_8x_single_percentile():
    s = parse_summary(tf.TRTEXEC_SUMMARY_8X)
    assert s["latency_ms"]["p99"] == 1.0523 and "p90" not in s["latency_ms"]
    assert s["end_to_end_ms"]["median"] == 0.83 and s["gpu_compute_ms"]["mean"] == 0.7871


def test_parse_summary_without_summary_raises():
    with pytest.raises(ValueError, match="Performance summary"):
        parse_summary("&&&& FAILED TensorRT.trtexec")


def test_parse_version_codes():
    assert parse_trtexec_version("&&&& RUNNING TensorRT.trtexec [TensorRT v8502] # trtexec") == "8.5.2"
    assert parse_trtexec_version("&&&& PASSED TensorRT.trtexec [TensorRT v100900] [b34] # x") == "10.9.0"
    assert parse_trtexec_version("no banner") is None


def test_summary_to_record_fields():
    rec = summary_to_record(parse_summary(tf.TRTEXEC_SUMMARY_10X), batch=4)
    assert rec["latency_ms_p50"] == 0.3412 and rec["latency_ms_p99"] == 0.4523
    assert rec["fps"] == pytest.approx(2870.12 * 4) and "trtexec itself" in rec["timing_note"]


# -- discovery -------------------------------------------------------------------------------------
def test_find_trtexec_prefers_path_then_tensorrt_dir(tmp_path, monkeypatch):
    a, b = tf.install_fake_trtexec(tmp_path / "a"), tf.install_fake_trtexec(tmp_path / "b")
    monkeypatch.setenv("PATH", str(a.parent))
    assert find_trtexec((str(b.parent),)) == str(a)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_trtexec((str(b.parent),)) == str(b)


def test_unavailable_names_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(TrtexecBackend, "search_dirs", (str(tmp_path),))
    a = TrtexecBackend.availability()
    assert not a.available and str(tmp_path) in a.reason and "/usr/src/tensorrt/bin" in a.install_hint


def test_available_reports_version(bin_dir):
    assert TrtexecBackend.availability().version == "10.3.0"


# -- compile = build + time -------------------------------------------------------------------------
def test_fp16_build_and_time_command_and_record(bin_dir, model, orin, tmp_path):
    c = compile_(model, orin, tmp_path, precision="fp16", options={"max_batch": 8})
    argv = tf.trtexec_calls(bin_dir)[-1]
    assert f"--onnx={model.path}" in argv and "--fp16" in argv and any(a.startswith("--saveEngine=") for a in argv)
    assert {"--iterations=1000", "--duration=0", "--percentile=90,95,99", "--avgRuns=10"} <= set(argv)
    assert "--maxShapes=input:8x1x28x28" in argv and "--shapes=input:1x1x28x28" in argv
    assert c.metadata["timing"] == "none" and c.metadata["timing_source"] == "trtexec"
    assert c.metadata["external_timing"]["latency_ms_p50"] == 0.3412
    assert c.metadata["trtexec_summary"]["gpu_compute_ms"]["median"] == 0.3243
    assert c.metadata["trtexec_iterations"] == 3 and c.path.exists()


def test_8x_asks_for_one_percentile(bin_dir, model, orin, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRTEXEC_VERSION", "8.5.2")
    c = compile_(model, orin, tmp_path, precision="fp32")
    argv = tf.trtexec_calls(bin_dir)[-1]
    assert "--percentile=99" in argv and "--noTF32" in argv and c.metadata["tensorrt_version"] == "8.5.2"


def test_cached_engine_is_loaded_not_rebuilt(bin_dir, model, orin, tmp_path):
    compile_(model, orin, tmp_path, precision="fp16")
    c = compile_(model, orin, tmp_path, precision="fp16")
    argv = tf.trtexec_calls(bin_dir)[-1]
    assert c.metadata["cached"] is True and any(a.startswith("--loadEngine=") for a in argv)
    assert not any(a.startswith("--onnx=") for a in argv)


def test_implicit_int8_without_cache_is_refused(bin_dir, model, orin, tmp_path):
    calib = np.zeros((8, 1, 28, 28), np.float32)
    with pytest.raises(UnsupportedRequest, match="trtexec cannot calibrate"):
        compile_(model, orin, tmp_path, calib, precision="int8", calibration="entropy")


def test_implicit_int8_uses_tensorrt_calibration_cache(bin_dir, model, orin, tmp_path):
    calib = np.zeros((8, 1, 28, 28), np.float32)
    cache = calibration_cache_path(tmp_path / "work", model, "entropy", calib, "10.3.0")
    cache.write_bytes(b"TRT-100300-EntropyCalibration2\n")
    compile_(model, orin, tmp_path, calib, precision="int8", calibration="entropy")
    argv = tf.trtexec_calls(bin_dir)[-1]
    assert "--int8" in argv and f"--calib={cache}" in argv


def test_explicit_int8_builds_from_qdq_graph(bin_dir, model, orin, tmp_path):
    calib = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    c = compile_(model, orin, tmp_path, calib, precision="int8", calibration="minmax",
                 options={"int8_mode": "explicit"})
    argv = tf.trtexec_calls(bin_dir)[-1]
    assert "--int8" in argv and any(a.startswith("--onnx=") and a.endswith("model.qdq.onnx") for a in argv)
    assert not any(a.startswith("--calib=") for a in argv) and c.metadata["int8_source"] == "qdq-ort"


def test_build_oom_is_a_clear_failure(bin_dir, model, orin, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRTEXEC_OOM", "1")
    with pytest.raises(EngineBuildError, match="out of GPU memory"):
        compile_(model, orin, tmp_path, precision="fp16")


# -- fidelity paths ---------------------------------------------------------------------------------
def test_fidelity_through_trtexec_without_python_bindings(bin_dir, model, orin, tmp_path):
    c = compile_(model, orin, tmp_path, precision="fp16", options={"max_batch": 4})
    sess = TrtexecBackend().load(c, orin, RuntimeConfig())
    assert isinstance(sess, TrtexecSession)
    x = np.random.default_rng(5).random((6, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(sess.run({"input": x})[0], nf.expected_output(x), rtol=1e-5)
    assert sess.calls == 2  # two engine batches of at most 4
    sess.close()


def test_fidelity_through_python_runtime_when_installed(bin_dir, model, orin, tmp_path, monkeypatch):
    c = compile_(model, orin, tmp_path, precision="fp16", options={"max_batch": 4})
    nf.install(monkeypatch, nf.make_fake_tensorrt("10.3.0"), nf.make_fake_cudart())
    sess = TrtexecBackend().load(c, orin, RuntimeConfig())
    assert isinstance(sess, TensorRTSession)
    x = np.ones((2, 1, 28, 28), np.float32)
    np.testing.assert_allclose(sess.run({"input": x})[0], nf.expected_output(x), rtol=1e-5)
    sess.close()
