"""THE backend contract, over every registered backend: a backend available here compiles the bundled default
checkpoint (or a tiny CNN until it exists), its float output matches the FP32 ONNX Runtime reference, and its
INT8 path produces outputs scored with every classification fidelity metric.

A backend whose toolchain lives in its own environment (rknn) is exercised in that environment's interpreter,
as the runner does. Unavailable backends skip with their own availability reason.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backends
from backends.base import BackendUnavailable, UnsupportedRequest
from backends.environments import interpreter_for
from harness.scoring.metrics import classification_fidelity, snr_db
from tests.backends.tiny_onnx import bundled_or_tiny, compile_and_run, device_for, images, labels_for, ort_reference

#: FP32 must match the reference to this SNR (numerical noise of a different kernel library only).
FP32_MIN_SNR_DB = 60.0
#: A backend without FP32 (RKNN's NPU) is checked at FP16: 10-bit mantissa, errors add up over ~20 layers.
FP16_MIN_SNR_DB = 30.0
N_EVAL, N_CALIB = 32, 32
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return bundled_or_tiny(tmp_path_factory.mktemp("contract-model"))


@pytest.fixture(scope="module")
def data(model):
    x = images(N_EVAL)
    return x, labels_for(N_EVAL), images(N_CALIB, split_name="train"), ort_reference(model, x)


def _available(name: str):
    cls = backends.get_backend(name)
    avail = cls.availability()
    if not avail.available:
        pytest.skip(f"{name}: {avail.explain()}")
    return cls()


def _run(name: str, model, precision: str, calib, x, tmp_path: Path) -> np.ndarray:
    """compile + run in this interpreter, or in the backend's own environment when it has one."""
    device = device_for(name)
    python = interpreter_for(name)
    try:
        if python is None or Path(python).parent.parent.resolve() == Path(sys.prefix).resolve():  # venvs share one binary
            return compile_and_run(name, device, model.path, precision, calib, x, tmp_path / "work")[0]
    except BackendUnavailable as exc:
        pytest.skip(f"{name}: {exc}")
    except UnsupportedRequest as exc:
        if "env setup" not in str(exc):
            raise
        # a toolchain environment no step created here (e.g. litert-converter): skip, naming the command
        pytest.skip(f"{name} needs a toolchain environment that is absent: {exc}")
    np.save(tmp_path / "x.npy", x)
    if calib is not None:
        np.save(tmp_path / "calib.npy", calib)
    job = {"backend": name, "device": device, "model": str(model.path), "precision": precision,
           "calib": str(tmp_path / "calib.npy") if calib is not None else None, "x": str(tmp_path / "x.npy"),
           "workdir": str(tmp_path / "work"), "out": str(tmp_path / "out.npy"), "meta": str(tmp_path / "meta.json")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); from tiny_onnx import child_main; child_main(sys.argv[1])"
    proc = subprocess.run([python, "-c", code, str(tmp_path / "job.json")], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{name} in {python} failed:\n{proc.stderr[-3000:]}"
    return np.load(tmp_path / "out.npy")


@pytest.mark.parametrize("name", backends.backend_names())
def test_float_output_matches_the_onnxruntime_reference(name, model, data, tmp_path):
    backend = _available(name)
    precisions = backend.capabilities().precisions
    x, _, _, ref = data
    if "fp32" in precisions:
        precision, floor = "fp32", FP32_MIN_SNR_DB
    elif "fp16" in precisions:
        precision, floor = "fp16", FP16_MIN_SNR_DB
    else:
        pytest.skip(f"{name} has no floating-point precision ({', '.join(precisions)})")
    out = _run(name, model, precision, None, x, tmp_path)
    assert out.shape == ref.shape
    assert snr_db(out, ref) >= floor, f"{name} {precision}: SNR {snr_db(out, ref):.1f} dB < {floor} dB"


@pytest.mark.parametrize("name", backends.backend_names())
def test_int8_outputs_get_every_fidelity_metric(name, model, data, tmp_path):
    backend = _available(name)
    if "int8" not in backend.capabilities().precisions:
        pytest.skip(f"{name} has no int8 precision")
    x, labels, calib, ref = data
    out = _run(name, model, "int8", calib, x, tmp_path)
    metrics = classification_fidelity(out, ref, labels)
    assert set(metrics) == {"top1", "top5", "top1_agreement", "logit_mse", "snr_db", "ece", "brier"}
    assert all(math.isfinite(v) for v in metrics.values()), metrics


def test_an_unavailable_backend_whose_reason_names_the_command_does_not_repeat_it():
    from backends.base import Availability

    command = "python -m harness env setup tpu-mlir"
    avail = Availability(False, f"environment /x does not exist; create it: {command}",
                         f"{command} (Python 3.10; several GB: torch)")
    assert avail.explain() == f"environment /x does not exist; create it: {command} (Python 3.10; several GB: torch)"
    assert Availability(False, "no SDK", "pip install sdk").explain() == "no SDK; fix: pip install sdk"
