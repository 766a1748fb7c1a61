"""TensorRT adapter against fakes of tensorrt 8.x/10.x and cuda-python (no GPU needed)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.backends import nvidia_fakes as nf  # noqa: E402

from backends.base import CompileConfig, RuntimeConfig, UnsupportedRequest  # noqa: E402
from backends.tensorrt_backend import SIDECAR_FILE, EngineBuildError, TensorRTBackend  # noqa: E402
from backends.tensorrt_int8 import calibration_cache_path, select_int8_route  # noqa: E402
from devices.loader import load_device  # noqa: E402


@pytest.fixture
def orin():
    return load_device("jetson_orin")


@pytest.fixture
def model(tmp_path):
    return nf.make_artifact(nf.make_onnx_model(tmp_path / "tiny.onnx"))


@pytest.fixture
def calib():
    return np.random.default_rng(1).random((40, 1, 28, 28), dtype=np.float32)


def fakes(monkeypatch, version="10.3.0", **kw):
    trt, cudart = nf.make_fake_tensorrt(version, **kw), nf.make_fake_cudart()
    nf.install(monkeypatch, trt, cudart)
    return trt, cudart


def compile_(model, orin, tmp_path, calib=None, **cfg):
    options = cfg.pop("options", {})
    return TensorRTBackend().compile(model, orin, CompileConfig(options=tuple(options.items()), **cfg), calib,
                                     tmp_path / "work")


# -- availability ----------------------------------------------------------------------------------
def test_unavailable_without_tensorrt_names_reason_and_hint(monkeypatch):
    nf.install(monkeypatch, None, nf.make_fake_cudart())
    a = TensorRTBackend.availability()
    assert not a.available and "TensorRT Python bindings are not importable" in a.reason
    assert "python3-libnvinfer" in a.install_hint and ".[tensorrt]" in a.install_hint


def test_unsupported_version_refused(monkeypatch):
    fakes(monkeypatch, version="9.2.0")
    a = TensorRTBackend.availability()
    assert not a.available and "9.2.0 is not supported" in a.reason and "8.x, 10.x" in a.reason


def test_unavailable_without_cuda_bindings(monkeypatch):
    nf.install(monkeypatch, nf.make_fake_tensorrt(), None)
    a = TensorRTBackend.availability()
    assert not a.available and "cuda-python or pycuda" in a.reason


def test_unavailable_without_cuda_device(monkeypatch):
    nf.install(monkeypatch, nf.make_fake_tensorrt(), nf.make_fake_cudart(device_count=0))
    a = TensorRTBackend.availability()
    assert not a.available and "CUDA device" in a.reason


def test_available_with_fakes(monkeypatch):
    fakes(monkeypatch, "8.6.1")
    assert TensorRTBackend.availability().version == "8.6.1"


# -- builder flags -------------------------------------------------------------------------------
@pytest.mark.parametrize("version,flags", [("8.5.2", 1), ("10.3.0", 0)])
def test_network_flags_explicit_batch_only_on_8x(monkeypatch, model, orin, tmp_path, version, flags):
    trt, _ = fakes(monkeypatch, version)
    compile_(model, orin, tmp_path, precision="fp32")
    assert trt._state.network_flags == [flags]


def test_fp32_clears_tf32(monkeypatch, model, orin, tmp_path):
    trt, _ = fakes(monkeypatch)
    c = compile_(model, orin, tmp_path, precision="fp32")
    assert trt._state.builds[0]["flags"] == [] and c.metadata["tf32"] is False


def test_fp16_sets_fp16_flag_and_workspace(monkeypatch, model, orin, tmp_path):
    trt, _ = fakes(monkeypatch)
    compile_(model, orin, tmp_path, precision="fp16", options={"workspace_mib": 256})
    build = trt._state.builds[0]
    assert "FP16" in build["flags"] and "INT8" not in build["flags"] and build["workspace"] == 256 << 20


def test_dynamic_batch_gets_an_optimization_profile(monkeypatch, model, orin, tmp_path):
    trt, _ = fakes(monkeypatch)
    compile_(model, orin, tmp_path, precision="fp16", options={"max_batch": 8})
    assert trt._state.builds[0]["profiles"] == [{"input": ((1, 1, 28, 28), (1, 1, 28, 28), (8, 1, 28, 28))}]


def test_parser_rejection_is_refused_with_its_message(monkeypatch, model, orin, tmp_path):
    import dataclasses

    fakes(monkeypatch)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")  # past the harness's own checks: what TensorRT's parser says is recorded
    with pytest.raises(UnsupportedRequest, match="ONNX parser rejected bad.onnx: cannot read"):
        compile_(dataclasses.replace(model, path=bad), orin, tmp_path, precision="fp16")


# -- implicit INT8 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method,klass", [("entropy", "IInt8EntropyCalibrator2"), ("minmax", "IInt8MinMaxCalibrator"),
                                          ("percentile", "IInt8LegacyCalibrator")])
def test_implicit_int8_uses_the_methods_calibrator(monkeypatch, model, orin, tmp_path, calib, method, klass):
    trt, _ = fakes(monkeypatch)
    c = compile_(model, orin, tmp_path, calib, precision="int8", calibration=method, options={"calib_batch": 16})
    build = trt._state.builds[0]
    assert "INT8" in build["flags"] and build["calibrator"] == klass
    assert "get_batch x2" in trt._state.calibrator_calls  # 40 images in whole batches of 16
    assert build["calibration_profile"] == {"input": ((16, 1, 28, 28),) * 3}
    assert c.metadata["int8_mode"] == "implicit" and c.metadata["calibration_images_used"] == 32


def test_percentile_passes_quantile(monkeypatch, model, orin, tmp_path, calib):
    trt, _ = fakes(monkeypatch)
    compile_(model, orin, tmp_path, calib, precision="int8", calibration="percentile", options={"quantile": 0.999})
    assert "get_quantile=0.999" in trt._state.calibrator_calls


def test_percentile_refused_without_legacy_calibrator(monkeypatch, model, orin, tmp_path, calib):
    fakes(monkeypatch, legacy_calibrator=False)
    with pytest.raises(UnsupportedRequest, match="IInt8LegacyCalibrator"):
        compile_(model, orin, tmp_path, calib, precision="int8", calibration="percentile")


def test_calibration_cache_written_then_reused(monkeypatch, model, orin, tmp_path, calib):
    trt, _ = fakes(monkeypatch)
    first = compile_(model, orin, tmp_path, calib, precision="int8", calibration="entropy")
    cache = Path(first.metadata["calibration_cache"])
    assert cache.read_bytes().startswith(b"TRT-10.3.0-IInt8EntropyCalibrator2")
    assert first.metadata["calibration_cache_hit"] is False
    trt._state.calibrator_calls.clear()
    # Another engine (other workspace) from the same model, method and data reuses the cache.
    second = compile_(model, orin, tmp_path, calib, precision="int8", calibration="entropy",
                      options={"workspace_mib": 512})
    assert second.metadata["calibration_cache_hit"] is True and second.metadata["calibration_batches_fed"] == 0
    assert trt._state.calibrator_calls == ["read_calibration_cache"]


def test_calibration_cache_key_depends_on_data_method_and_version(model, tmp_path):
    d1, d2 = np.zeros((2, 1, 4, 4), np.float32), np.ones((2, 1, 4, 4), np.float32)
    a = calibration_cache_path(tmp_path, model, "entropy", d1, "10.3.0")
    assert a != calibration_cache_path(tmp_path, model, "entropy", d2, "10.3.0")
    assert a != calibration_cache_path(tmp_path, model, "minmax", d1, "10.3.0")
    assert a != calibration_cache_path(tmp_path, model, "entropy", d1, "8.6.1")


def test_implicit_int8_without_calibration_is_refused(monkeypatch, model, orin, tmp_path):
    fakes(monkeypatch)
    with pytest.raises(UnsupportedRequest, match="needs a calibration set"):
        compile_(model, orin, tmp_path, None, precision="int8", calibration="entropy")


def test_int8_refused_on_gpu_without_int8(monkeypatch, model, orin, tmp_path, calib):
    fakes(monkeypatch, fast_int8=False)
    with pytest.raises(UnsupportedRequest, match="no INT8 support"):
        compile_(model, orin, tmp_path, calib, precision="int8", calibration="minmax")


# -- explicit INT8 (QDQ) route selection -------------------------------------------------------------
def test_route_learned_prefers_checkpoint_qdq(tmp_path, model):
    qdq = tmp_path / "m.qdq.onnx"
    qdq.write_bytes(b"x")
    table = tmp_path / "m.calib.json"
    table.write_text("{}")
    m = nf.make_artifact(model.path, qdq_path=qdq, calibration_table=table)
    assert select_int8_route(m, "learned", True).source == "qdq-checkpoint"
    m2 = nf.make_artifact(model.path, calibration_table=table)
    assert select_int8_route(m2, "learned", True).source == "qdq-learned-table"


def test_route_learned_without_export_is_refused(model):
    with pytest.raises(UnsupportedRequest, match="neither a QDQ export"):
        select_int8_route(model, "learned", True)


def test_route_learned_implicit_is_refused(model):
    with pytest.raises(UnsupportedRequest, match="QDQ graph"):
        select_int8_route(model, "learned", True, "implicit")


def test_route_default_is_implicit_entropy(model):
    r = select_int8_route(model, None, True)
    assert (r.mode, r.source, r.method) == ("implicit", "calibrator", "entropy")


def test_explicit_route_parses_symmetric_ort_qdq_graph(monkeypatch, model, orin, tmp_path, calib):
    import onnx
    from onnx import numpy_helper

    trt, _ = fakes(monkeypatch)
    c = compile_(model, orin, tmp_path, calib, precision="int8", calibration="minmax",
                 options={"int8_mode": "explicit"})
    build = trt._state.builds[0]
    assert build["qdq"] and build["calibrator"] is None and "INT8" in build["flags"]
    assert trt._state.parsed[-1].endswith("model.qdq.onnx") and c.metadata["int8_source"] == "qdq-ort"
    g = onnx.load(str(c.path.parent / "model.qdq.onnx")).graph  # the build's staging dir is now the entry
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    zps = [inits[n.input[2]] for n in g.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)  # TensorRT needs zero points of 0


def test_learned_route_parses_checkpoint_qdq(monkeypatch, model, orin, tmp_path, calib):
    trt, _ = fakes(monkeypatch)
    qdq = nf.make_onnx_model(tmp_path / "ckpt.qdq.onnx")
    m = nf.make_artifact(model.path, qdq_path=qdq)
    c = compile_(m, orin, tmp_path, None, precision="int8", calibration="learned")
    assert trt._state.parsed == [str(qdq)] and c.metadata["int8_source"] == "qdq-checkpoint"


# -- engine cache ------------------------------------------------------------------------------------
def test_engine_cached_with_sidecar(monkeypatch, model, orin, tmp_path):
    trt, _ = fakes(monkeypatch)
    a = compile_(model, orin, tmp_path, precision="fp16")
    b = compile_(model, orin, tmp_path, precision="fp16")
    assert len(trt._state.builds) == 1 and b.metadata["cached"] is True and a.path == b.path
    side = json.loads((a.path.parent / SIDECAR_FILE).read_text())
    assert side["tensorrt_version"] == "10.3.0" and side["gpu_name"] == "Orin" and side["compute_capability"] == "8.7"


def test_engine_key_includes_version_and_gpu(monkeypatch, model, orin, tmp_path):
    fakes(monkeypatch, "10.3.0")
    a = compile_(model, orin, tmp_path, precision="fp16")
    fakes(monkeypatch, "8.6.1")
    b = compile_(model, orin, tmp_path, precision="fp16")
    nf.install(monkeypatch, nf.make_fake_tensorrt("8.6.1"), nf.make_fake_cudart(gpu_name="RTX 3090", cc=(8, 6)))
    c = compile_(model, orin, tmp_path, precision="fp16")
    assert len({a.path.parent, b.path.parent, c.path.parent}) == 3


def test_tampered_engine_entry_is_rebuilt(monkeypatch, model, orin, tmp_path):
    trt, _ = fakes(monkeypatch)
    a = compile_(model, orin, tmp_path, precision="fp16")
    side = a.path.parent / SIDECAR_FILE
    side.write_text(json.dumps({**json.loads(side.read_text()), "tensorrt_version": "8.5.2"}))
    b = compile_(model, orin, tmp_path, precision="fp16")
    assert len(trt._state.builds) == 2 and b.metadata["cached"] is False
    assert b.metadata["cache_rebuilt_reason"] == f"{SIDECAR_FILE} does not match its checksum"


def test_load_refuses_engine_of_other_version(monkeypatch, model, orin, tmp_path):
    fakes(monkeypatch, "8.6.1")
    compiled = compile_(model, orin, tmp_path, precision="fp16")
    fakes(monkeypatch, "10.3.0")
    with pytest.raises(UnsupportedRequest, match="TensorRT 8.6.1, this is TensorRT 10.3.0"):
        TensorRTBackend().load(compiled, orin, RuntimeConfig())


def test_builder_oom_gives_clear_error(monkeypatch, model, orin, tmp_path):
    fakes(monkeypatch, oom=True)
    with pytest.raises(EngineBuildError, match="ran out of GPU memory.*workspace_mib"):
        compile_(model, orin, tmp_path, precision="fp16")
    assert not list((tmp_path / "work").rglob("model.engine"))


# -- DLA ---------------------------------------------------------------------------------------------
def test_dla_target_sets_device_core_and_gpu_fallback(monkeypatch, model, orin, tmp_path):
    trt, _ = fakes(monkeypatch, num_dla=2)
    c = compile_(model, orin, tmp_path, precision="fp16", target="dla1")
    build = trt._state.builds[0]
    assert build["device"] == "DLA" and build["dla_core"] == 1 and "GPU_FALLBACK" in build["flags"]
    assert c.metadata["target"] == "dla1" and c.metadata["gpu_fallback"] is True
    assert c.metadata["dla_layers"] == 3 and c.metadata["gpu_fallback_layer_names"] == ["Flatten_3", "Gemm_4"]


def test_dla_without_gpu_fallback_refuses_unsupported_layers(monkeypatch, model, orin, tmp_path):
    fakes(monkeypatch, num_dla=1)
    with pytest.raises(UnsupportedRequest, match="2 layer.*cannot run on DLA"):
        compile_(model, orin, tmp_path, precision="fp16", target="dla0", options={"gpu_fallback": False})


def test_dla_refused_where_absent(monkeypatch, model, orin, tmp_path):
    fakes(monkeypatch, num_dla=0)
    with pytest.raises(UnsupportedRequest, match="0 DLA core"):
        compile_(model, orin, tmp_path, precision="fp16", target="dla")


# -- inference ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["10.3.0", "8.4.1"])  # 8.4 has only the bindings API (execute_async_v2)
def test_run_returns_engine_outputs(monkeypatch, model, orin, tmp_path, version):
    fakes(monkeypatch, version)
    compiled = compile_(model, orin, tmp_path, precision="fp16", options={"max_batch": 4})
    sess = TensorRTBackend().load(compiled, orin, RuntimeConfig())
    x = np.random.default_rng(2).random((3, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(sess.run({"input": x})[0], nf.expected_output(x), rtol=1e-5)
    sess.close()


def test_run_result_is_owned_and_synchronized(monkeypatch, model, orin, tmp_path):
    _, cudart = fakes(monkeypatch)
    sess = TensorRTBackend().load(compile_(model, orin, tmp_path, precision="fp32"), orin, RuntimeConfig())
    x = np.ones((1, 1, 28, 28), np.float32)
    first = sess.run({"input": x})[0]
    syncs = cudart.calls.count("cudaStreamSynchronize")
    sess.run({"input": x * 2})[0]
    np.testing.assert_allclose(first, nf.expected_output(x))  # not overwritten by the next call
    assert cudart.calls.count("cudaStreamSynchronize") == syncs + 1
    sess.synchronize()
    assert cudart.calls.count("cudaStreamSynchronize") == syncs + 2
    assert "cudaMallocHost" in cudart.calls  # pinned host buffers
    sess.close()


def test_large_batch_split_into_engine_batches(monkeypatch, model, orin, tmp_path):
    fakes(monkeypatch)
    sess = TensorRTBackend().load(compile_(model, orin, tmp_path, precision="fp16", options={"max_batch": 4}),
                                  orin, RuntimeConfig())
    x = np.random.default_rng(3).random((10, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(sess.run({"input": x})[0], nf.expected_output(x), rtol=1e-5)
    sess.close()


def test_fixed_batch_engine_pads_the_tail(monkeypatch, orin, tmp_path):
    fakes(monkeypatch)
    m = nf.make_artifact(nf.make_onnx_model(tmp_path / "fixed.onnx", batch=4))
    sess = TensorRTBackend().load(compile_(m, orin, tmp_path, precision="fp16"), orin, RuntimeConfig())
    x = np.random.default_rng(4).random((6, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(sess.run({"input": x})[0], nf.expected_output(x), rtol=1e-5)
    sess.close()


def test_close_frees_device_and_pinned_memory(monkeypatch, model, orin, tmp_path):
    _, cudart = fakes(monkeypatch)
    sess = TensorRTBackend().load(compile_(model, orin, tmp_path, precision="fp16"), orin, RuntimeConfig())
    sess.close()
    assert cudart.memory == {} and cudart.pinned == set()


def test_pycuda_flavour_runs_end_to_end(monkeypatch, model, orin, tmp_path, calib):
    pycuda = nf.make_fake_pycuda()
    nf.install(monkeypatch, nf.make_fake_tensorrt(), None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", pycuda)
    assert TensorRTBackend.availability().available
    c = compile_(model, orin, tmp_path, calib, precision="int8", calibration="minmax", options={"calib_batch": 8})
    assert c.metadata["cuda_bindings"] == "pycuda" and c.metadata["calibration_batches_fed"] == 5
    assert pycuda.events.count("make_context") == pycuda.events.count("pop") == 1  # the build's context is popped
    sess = TensorRTBackend().load(c, orin, RuntimeConfig())
    x = np.random.default_rng(6).random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(sess.run({"input": x})[0], nf.expected_output(x), rtol=1e-5)
    sess.close()
    assert pycuda.events[-1] == "pop" and "synchronize" in pycuda.events
