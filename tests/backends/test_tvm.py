"""TVM adapter: target parsing, FP32 against ORT, QDQ INT8 marked simulated, exported library, refusals,
and (slow) MetaSchedule tuning with a database reused by the next compile."""
from __future__ import annotations

import numpy as np
import pytest

from backends.base import CompileConfig, RuntimeConfig, UnsupportedRequest
from backends.tvm_backend import INT8_NUMERICS, TvmBackend, TvmOptions, parse_target_string, unsupported_ops_from_error
from devices import load_device
from tests.backends.tiny_onnx import images, ort_reference, run_all, snr_vs_ort, tiny_cnn, unknown_op_model

AVAIL = TvmBackend.availability()
needs_tvm = pytest.mark.skipif(not AVAIL.available, reason=AVAIL.explain())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tvm")
    return tiny_cnn(tmp / "tiny.onnx"), load_device("cpu"), tmp


def test_profile_target_string_becomes_a_json_dict():
    assert parse_target_string("llvm -mtriple=aarch64-linux-gnu -mattr=+neon,+dotprod -num-cores=4") == {
        "kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"], "num-cores": 4}


def test_unparseable_target_is_refused():
    with pytest.raises(UnsupportedRequest, match="-key=value"):
        parse_target_string("llvm neon")


def test_unsupported_ops_parsed_from_frontend_error():
    assert unsupported_ops_from_error("The following operators are not supported for frontend ONNX: A, B") == \
        ["A", "B"]


@needs_tvm
def test_fp32_matches_ort_and_exports_a_library(setup):
    model, device, tmp = setup
    backend = TvmBackend()
    compiled = backend.compile(model, device, CompileConfig("fp32"), None, tmp / "work")
    assert compiled.path.suffix == ".so" and compiled.path.exists()
    assert compiled.metadata["tvm_target"]["kind"] == "llvm" and compiled.metadata["tvm_target"]["mcpu"]
    assert snr_vs_ort(backend, compiled, device, model, 6) >= 60.0


@needs_tvm
def test_second_compile_loads_the_library_without_rebuilding(setup):
    model, device, tmp = setup
    backend = TvmBackend()
    backend.compile(model, device, CompileConfig("fp32"), None, tmp / "work")
    assert backend.compile(model, device, CompileConfig("fp32"), None, tmp / "work").metadata["cached"] is True


@needs_tvm
def test_int8_is_recorded_as_simulated_qdq(setup):
    model, device, tmp = setup
    backend = TvmBackend()
    compiled = backend.compile(model, device, CompileConfig("int8", calibration="minmax", calibration_samples=8),
                               images(8, split_name="train"), tmp / "work")
    assert compiled.metadata["int8_numerics"] == INT8_NUMERICS and "FP32 speed" in compiled.metadata["timing_note"]
    assert snr_vs_ort(backend, compiled, device, model, 4) > 15.0


@needs_tvm
def test_cross_target_is_refused(setup):
    model, _, tmp = setup
    with pytest.raises(UnsupportedRequest, match="cross target"):
        TvmBackend().compile(model, load_device("rk3588"), CompileConfig("fp32"), None, tmp / "work")


@needs_tvm
def test_cuda_target_without_gpu_is_refused(setup):
    model, _, tmp = setup
    import tvm

    if tvm.cuda().exist:
        pytest.skip("a CUDA device is present")
    with pytest.raises(UnsupportedRequest, match="cuda"):
        TvmBackend().compile(model, load_device("jetson_orin"), CompileConfig("fp32"), None, tmp / "work")


@needs_tvm
def test_unknown_operator_is_named(tmp_path):
    with pytest.raises(UnsupportedRequest, match="FancyOp"):
        TvmBackend().compile(unknown_op_model(tmp_path / "bad.onnx"), load_device("cpu"), CompileConfig("fp32"), None,
                             tmp_path / "work")


@needs_tvm
def test_fp16_is_refused_not_downgraded(setup):
    with pytest.raises(UnsupportedRequest, match="fp16"):
        TvmBackend().check_request(CompileConfig("fp16"))


@needs_tvm
@pytest.mark.slow
def test_tuning_reaches_every_task_and_its_database_is_reused_by_the_next_compile(setup):
    """~60-90 s on 2 cores: MetaSchedule build workers spend ~15 s each importing before the first trial."""
    model, device, tmp = setup
    backend = TvmBackend()
    config = CompileConfig("fp32", options=(("tuning_trials", 2), ("tuning_ops", "all")))
    first = backend.compile(model, device, config, None, tmp / "tune")
    assert first.metadata["tuning_tasks_reached"] == first.metadata["tuning_tasks"]
    first.path.unlink()  # drop the library, keep the tuning database
    second = backend.compile(model, device, CompileConfig("fp32"), None, tmp / "tune")   # no budget: found
    assert first.metadata["tuning_source"] == "tuned now" and second.metadata["tuning_source"] == "cache"
    assert second.metadata["tuned"] is True
    session = backend.load(second, device, RuntimeConfig(threads=1))
    try:
        x = images(2)
        assert np.allclose(run_all(session, x), ort_reference(model, x), atol=1e-4)
    finally:
        session.close()


@needs_tvm
def test_symbolic_height_width_compile_at_the_data_size(tmp_path):
    from harness.model.checkpoint import load_checkpoint
    from tests.harness.model import onnx_models as m

    ckpt = load_checkpoint(m.dynamic_hw_classifier(tmp_path / "dyn.onnx")).with_data_shapes({"input": (2, 5, 7)})
    backend, device = TvmBackend(), load_device("cpu")
    compiled = backend.compile(ckpt.artifact(), device, CompileConfig("fp32"), None, tmp_path / "work")
    assert compiled.metadata["input_shapes"] == {"input": [1, 2, 5, 7]}  # never a 0 dimension
    session = backend.load(compiled, device, RuntimeConfig(threads=1))
    x = np.random.default_rng(0).random((3, 2, 5, 7), dtype=np.float32)
    (logits,) = session.run({"input": x})
    np.testing.assert_allclose(logits, m.dynamic_hw_numpy(x), rtol=1e-5)


@needs_tvm
def test_two_outputs_come_back_from_the_vm_tuple_in_graph_order(tmp_path):
    from harness.model.checkpoint import load_checkpoint
    from tests.harness.model import onnx_models as m

    ckpt = load_checkpoint(m.one_input_two_outputs(tmp_path / "two.onnx")).with_data_shapes({"input": (4,)})
    backend, device = TvmBackend(), load_device("cpu")
    compiled = backend.compile(ckpt.artifact(), device, CompileConfig("fp32"), None, tmp_path / "work")
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    outs = backend.load(compiled, device, RuntimeConfig(threads=1)).run({"input": x})
    assert len(outs) == 2
    for got, want in zip(outs, m.one_input_two_outputs_numpy(x)):
        np.testing.assert_allclose(got, want, rtol=1e-5)


@needs_tvm
def test_nchw_layout_option_builds_the_graphs_own_layout_with_the_same_outputs(setup):
    model, device, tmp = setup
    backend = TvmBackend()
    compiled = backend.compile(model, device, CompileConfig("fp32", options=(("conv_layout", "NCHW"),)), None,
                               tmp / "work")
    assert compiled.metadata["tvm_conv_layout"] == "NCHW/OIHW"
    assert snr_vs_ort(backend, compiled, device, model, 3) >= 60.0


def test_an_unknown_conv_layout_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="NHWC"):
        TvmOptions(conv_layout="NCHW16c")


@needs_tvm
def test_calls_reusing_the_input_buffer_each_answer_their_own_input(setup):
    model, device, tmp = setup
    backend = TvmBackend()
    session = backend.load(backend.compile(model, device, CompileConfig("fp32"), None, tmp / "work"), device,
                           RuntimeConfig(threads=1))
    try:
        x = images(2)
        first = session.run({model.input_name: x[:1]})[0]
        second = session.run({model.input_name: x[1:]})[0]   # same input buffer, new contents
        want = ort_reference(model, x)
        np.testing.assert_allclose(np.concatenate([first, second]), want, rtol=1e-4, atol=1e-5)
    finally:
        session.close()
