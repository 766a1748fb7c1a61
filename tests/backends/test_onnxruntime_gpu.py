"""ONNX Runtime CUDA / TensorRT execution-provider adapters: availability, fallback refusal, provider options.

The GPU providers are absent here; a session wrapper reports them as in use while the CPU provider computes,
which is enough to check what the adapters ask ONNX Runtime for and what they record.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.backends import nvidia_fakes as nf  # noqa: E402

from backends.base import CompileConfig, RuntimeConfig, UnsupportedRequest  # noqa: E402
from backends.onnxruntime_gpu import OnnxRuntimeCudaBackend, OnnxRuntimeTensorRTBackend  # noqa: E402
from devices.loader import load_device  # noqa: E402

GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture
def gpu_listed(monkeypatch):
    """ORT claims GPU providers (as onnxruntime-gpu does) but this CPU build cannot load them."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_PROVIDERS))


@pytest.fixture
def gpu_session(monkeypatch, gpu_listed):
    """Sessions report the requested providers as in use; the CPU provider computes."""
    real = ort.InferenceSession
    seen: list = []

    class Session(real):
        def __init__(self, path, sess_options=None, providers=None, **kw):
            seen.append(providers)
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
            self._claimed = [p[0] if isinstance(p, tuple) else p for p in providers]

        def get_providers(self):
            return self._claimed

    monkeypatch.setattr(ort, "InferenceSession", Session)
    return seen


@pytest.fixture
def model(tmp_path):
    return nf.make_artifact(nf.make_onnx_model(tmp_path / "tiny.onnx"))


@pytest.fixture
def device():
    return load_device("desktop_gpu")


def test_unavailable_without_gpu_provider_names_hint():
    a = OnnxRuntimeCudaBackend.availability()
    assert not a.available and "has no CUDAExecutionProvider" in a.reason and ".[gpu]" in a.install_hint


def test_available_when_provider_listed(gpu_listed):
    assert OnnxRuntimeTensorRTBackend.availability().available


def test_silent_cpu_fallback_is_refused(gpu_listed, model, device, tmp_path):
    # The real CPU-only ORT accepts the CUDA provider name and quietly runs on the CPU.
    with pytest.warns(UserWarning), pytest.raises(UnsupportedRequest, match="fell back from CUDAExecutionProvider"):
        OnnxRuntimeCudaBackend().compile(model, device, CompileConfig(precision="fp32"), None, tmp_path)


def test_cuda_records_session_providers_and_runs(gpu_session, model, device, tmp_path):
    b = OnnxRuntimeCudaBackend()
    c = b.compile(model, device, CompileConfig(precision="fp32"), None, tmp_path)
    assert c.metadata["session_providers"][0] == "CUDAExecutionProvider"
    sess = b.load(c, device, RuntimeConfig())
    out = sess.run({"input": np.zeros((2, 1, 28, 28), np.float32)})[0]
    sess.synchronize()
    assert out.shape == (2, 10)
    sess.close()


def test_cuda_refuses_int8(gpu_session, model, device, tmp_path):
    with pytest.raises(UnsupportedRequest, match="does not support precision 'int8'"):
        OnnxRuntimeCudaBackend().compile(model, device, CompileConfig(precision="int8"), None, tmp_path)


def test_tensorrt_ep_fp16_enables_trt_fp16_and_engine_cache(gpu_session, model, device, tmp_path):
    c = OnnxRuntimeTensorRTBackend().compile(model, device, CompileConfig(precision="fp16"), None, tmp_path)
    name, opts = gpu_session[-1][0]
    assert name == "TensorrtExecutionProvider" and opts["trt_fp16_enable"] is True
    assert opts["trt_engine_cache_enable"] is True and Path(opts["trt_engine_cache_path"]).parent == c.path.parent
    assert c.path != model.path  # the artifact (and so the engine cache) lives in the artifact dir


def test_tensorrt_ep_int8_uses_symmetric_qdq_graph(gpu_session, model, device, tmp_path):
    calib = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    c = OnnxRuntimeTensorRTBackend().compile(model, device, CompileConfig(precision="int8", calibration="minmax"),
                                             calib, tmp_path)
    assert c.path.name == "model.qdq.onnx" and c.metadata["int8_source"] == "qdq-ort"
    assert gpu_session[-1][0][1]["trt_int8_enable"] is True


def test_tensorrt_ep_refuses_implicit_int8(gpu_session, model, device, tmp_path):
    cfg = CompileConfig(precision="int8", calibration="entropy", options=(("int8_mode", "implicit"),))
    with pytest.raises(UnsupportedRequest, match="QDQ graph"):
        OnnxRuntimeTensorRTBackend().compile(model, device, cfg, np.zeros((4, 1, 28, 28), np.float32), tmp_path)


def test_load_refuses_fallback(monkeypatch, gpu_session, model, device, tmp_path):
    b = OnnxRuntimeCudaBackend()
    c = b.compile(model, device, CompileConfig(precision="fp32"), None, tmp_path)
    monkeypatch.setattr(ort.InferenceSession, "get_providers", lambda self: ["CPUExecutionProvider"])
    with pytest.raises(UnsupportedRequest, match="session uses CPUExecutionProvider"):
        b.load(c, device, RuntimeConfig())
