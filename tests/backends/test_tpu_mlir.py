"""tpu-mlir adapter: the toolchain steps for a request, placement parsing, the glibc fix, the helper's pipe
protocol and refusals. The real toolchain runs in the contract test, in its own environment."""
from __future__ import annotations

import os

import numpy as np
import pytest

from backends.base import CompileConfig, UnsupportedRequest
from backends.tpu_mlir_backend import TpuMlirBackend, _recv, _send, deploy_commands, move_bundled_glibc_aside
from backends.tpu_mlir_backend import parse_placement
from tests.backends.tiny_onnx import compile_tiny, tiny_cnn

LOWERED = """\
    %1 = "tpu.Cast"(%0) : (tensor<1x1x28x28xf32>) -> tensor<1x1x28x28xi8>
    %2 = "tpu.Conv2D"(%1, %w) : ...
    %3 = "tpu.Conv2D"(%2, %w) : ...
    %4 = "tpu.GenericCpu"(%3) {cpu_op_name = "topk"} : ...
    %5 = "tpu.Load"(%4) : ...
"""


def test_int8_runs_transform_calibration_deploy(tmp_path):
    steps = deploy_commands(tiny_cnn(tmp_path / "m.onnx"), CompileConfig("int8", activation_signed=True),
                            "bm1684x", "minmax", 32)
    assert [s[0] for s in steps] == ["model_transform", "run_calibration", "model_deploy"]


def test_minmax_maps_to_max_thresholds(tmp_path):
    steps = deploy_commands(tiny_cnn(tmp_path / "m.onnx"), CompileConfig("int8"), "bm1684x", "minmax", 32)
    assert steps[1][steps[1].index("--cali_method") + 1] == "max"


def test_unsigned_activations_ask_for_asymmetric_int8(tmp_path):
    steps = deploy_commands(tiny_cnn(tmp_path / "m.onnx"), CompileConfig("int8", activation_signed=False),
                            "bm1684x", "kl", 32)
    assert "--asymmetric" in steps[-1]


def test_fp16_has_no_calibration_step(tmp_path):
    steps = deploy_commands(tiny_cnn(tmp_path / "m.onnx"), CompileConfig("fp16"), "bm1684x", None, 0)
    assert [s[0] for s in steps] == ["model_transform", "model_deploy"] and "F16" in steps[-1]


def test_generic_cpu_ops_count_as_fallback(tmp_path):
    (tmp_path / "model_bm1684x_int8_sym_tpu.mlir").write_text(LOWERED)
    assert parse_placement(tmp_path) == ({"Cast": 1, "Conv2D": 2}, {"GenericCpu": 1})


def test_bundled_glibc_is_moved_aside_on_a_newer_host(tmp_path, monkeypatch):
    for name in ("libc.so.6", "libm.so.6", "libz.so.1"):
        (tmp_path / name).write_text("")
    monkeypatch.setattr("backends.tpu_mlir_backend.host_glibc", lambda: (2, 36))
    assert move_bundled_glibc_aside(tmp_path) == ["libc.so.6", "libm.so.6"]


def test_bundled_glibc_stays_on_an_older_host(tmp_path, monkeypatch):
    (tmp_path / "libc.so.6").write_text("")
    monkeypatch.setattr("backends.tpu_mlir_backend.host_glibc", lambda: (2, 31))
    assert move_bundled_glibc_aside(tmp_path) == [] and (tmp_path / "libc.so.6").exists()


def test_arrays_cross_a_pipe_unchanged():
    r, w = os.pipe()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with os.fdopen(w, "wb") as out:
        _send(out, x)
    with os.fdopen(r, "rb") as inp:
        assert np.array_equal(_recv(inp), x)


def test_device_without_tpu_processor_is_refused(tmp_path):
    with pytest.raises(UnsupportedRequest, match="tpu_processor"):
        compile_tiny(TpuMlirBackend(), "cpu", tmp_path, samples=4)


def test_per_tensor_weights_are_refused():
    with pytest.raises(UnsupportedRequest, match="per_tensor"):
        TpuMlirBackend().check_request(CompileConfig("int8", per_channel=False))
