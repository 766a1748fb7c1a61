"""The TensorRT adapter inside the harness worker (compile, load, timed loop, validation) on fakes.

The fake engine computes the parsed ONNX graph, so the worker's fidelity against the FP32 reference checks
that the adapter's buffers, batching and copies hand back the right outputs in the right order.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.backends import nvidia_fakes as nf  # noqa: E402

from harness.bench.jobs import JobSpec  # noqa: E402
from harness.bench.worker import run_measure, run_reference  # noqa: E402


def make_spec(tmp_path, precision, calibration=None, **kw):
    model = nf.make_onnx_model(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    if not data.exists():
        np.savez(data, eval_images=rng.random((12, 1, 28, 28), dtype=np.float32),
                 eval_labels=rng.integers(0, 10, 12), calib_images=rng.random((16, 1, 28, 28), dtype=np.float32))
    from harness.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(model).with_data_shapes({"input": (1, 28, 28)})
    fields = dict(run_id="r", job_id=f"j-{precision}", mode="measure", device="jetson_orin", backend="tensorrt",
                  precision=precision, checkpoint="tiny", checkpoint_path=str(model), calibration=calibration,
                  per_channel=True, activation_signed=True, data_path=str(data),
                  reference_path=str(tmp_path / "ref.npz"), result_path=str(tmp_path / "res.json"),
                  stage_path=str(tmp_path / "stage"), latency_path=str(tmp_path / f"lat-{precision}.npy"),
                  workdir=str(tmp_path / "work"), warmup=2, iters=5, runs=2, power_idle_s=0.0,
                  model=ckpt.to_dict())
    fields.update(kw)
    return JobSpec(**fields)


@pytest.fixture
def fake_trt(monkeypatch):
    nf.install(monkeypatch, nf.make_fake_tensorrt(run_model=True), nf.make_fake_cudart())


@pytest.mark.parametrize("precision,calibration", [("fp16", None), ("int8", "entropy")])
def test_worker_runs_tensorrt_end_to_end(fake_trt, tmp_path, precision, calibration):
    assert run_reference(make_spec(tmp_path, "fp32", mode="reference"))["status"] == "ok"
    out = run_measure(make_spec(tmp_path, precision, calibration, validate_batch=5))
    assert out["status"] == "ok", out.get("error_message")
    assert out["extra"]["tensorrt_version"] == "10.3.0" and out["latency_ms_p50"] > 0
    assert (out["exact_match"] or out["snr_db"] > 100) and out["top1_agreement"] == 1.0  # the engine's outputs, in order
    if precision == "int8":
        assert out["calibration_method"] == "entropy" and out["extra"]["int8_mode"] == "implicit"


def test_worker_runs_trtexec_route_without_python_bindings(monkeypatch, tmp_path):
    from tests.backends import trtexec_fake as tf

    from backends.trtexec_backend import TrtexecBackend

    bin_dir = tmp_path / "bin"
    tf.install_fake_trtexec(bin_dir)
    monkeypatch.setattr(TrtexecBackend, "search_dirs", (str(bin_dir),))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("FAKE_TRTEXEC_RUN_MODEL", "1")
    nf.install(monkeypatch, None, None)
    assert run_reference(make_spec(tmp_path, "fp32", mode="reference"))["status"] == "ok"
    out = run_measure(make_spec(tmp_path, "fp16", backend="trtexec", validate_batch=6,
                                options=(("max_batch", 8),)))
    assert out["status"] == "ok", out.get("error_message")
    assert out["timing_note"].startswith("latency measured by trtexec itself")
    assert out["extra"]["external_timing"]["latency_ms_p50"] == 0.3412
    calls = [c for c in tf.trtexec_calls(bin_dir) if c != ["--help"]]
    assert (out["exact_match"] or out["snr_db"] > 100) and len(calls) == 1 + 2  # build+time, then 2 output batches of at most 6
