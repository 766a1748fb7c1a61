"""Fidelity studies that share one results folder (``FidelityOptions.runs_dir``, as the reproduction runs them): the
harness's caches serve a later study only what does not depend on what differs between the studies. The FP32
job's reference and validation pass are served to a study of another calibration draw; the INT8 (calibrated)
artifact and pass are not, nor a per-tensor one to a per-channel study."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.fidelity import FidelityOptions, run_fidelity
from harness.store.layout import RECORDS_FILE
from harness.store.records import JobRecord

pytest.importorskip("onnxruntime")

STUDIES = {"d0-pt": (0, False), "d1-pt": (1, False), "d0-pc": (0, True)}   # tag: (calibration draw, per-channel)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Three studies, in order, into one runs folder: draw 0 per-tensor, draw 1 per-tensor, draw 0 per-channel.
    The calibration set (300 images) is larger than the 256 a draw takes, so the two draws calibrate on different
    subsets; the evaluation set is the same in every study."""
    from tests.conftest import make_tiny_cnn, write_ort_only_profile

    tmp = tmp_path_factory.mktemp("shared")
    model = make_tiny_cnn(tmp / "tiny.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp / "eval.npz", input=rng.random((24, 1, 28, 28), dtype=np.float32), labels=rng.integers(0, 10, 24))
    np.savez(tmp / "calib.npz", input=rng.random((300, 1, 28, 28), dtype=np.float32))
    profile = write_ort_only_profile(tmp)
    for tag, (draw, per_channel) in STUDIES.items():
        run_fidelity(FidelityOptions(
            checkpoints=(str(model),), devices=(str(profile),), out=tmp / tag, runs_dir=tmp / "runs",
            run_id=tag, calib_seed=draw, per_channel=per_channel, validate_budget_s=None, threads=1, timeout_s=300,
            data_path=tmp / "eval.npz", calib_data_path=tmp / "calib.npz"))
    return tmp


def _record(root: Path, tag: str, precision: str) -> JobRecord:
    [run] = (root / "runs").glob(f"{tag}-00-*")
    records = [JobRecord.from_dict(json.loads(line)) for line in (run / RECORDS_FILE).read_text().splitlines()]
    [rec] = [r for r in records if r.precision == precision]
    assert rec.status == "ok", rec.error_message
    return rec


def test_the_runs_of_every_study_go_to_the_given_folder_and_each_report_to_its_own(shared):
    runs = sorted(p.name for p in (shared / "runs").iterdir() if not p.name.startswith("."))
    assert runs == ["d0-pc-00-ortonly-real", "d0-pt-00-ortonly-real", "d1-pt-00-ortonly-real"]
    assert all((shared / tag / "fidelity.md").exists() and not (shared / tag / "runs").exists() for tag in STUDIES)


def test_the_fp32_validation_pass_is_served_to_a_study_of_another_draw(shared):
    assert _record(shared, "d1-pt", "fp32").extra["validation_reused"]["run_id"] == "d0-pt-00-ortonly-real"


def test_the_fp32_reference_is_computed_once_for_every_study(shared):
    assert len(list((shared / "runs" / ".cache" / "references").glob("reference__tiny__*.npz"))) == 1


def test_an_int8_artifact_of_draw_0_is_not_served_to_draw_1(shared):
    assert _record(shared, "d1-pt", "int8").compile_cached is False


def test_an_int8_validation_pass_of_draw_0_is_not_served_to_draw_1(shared):
    assert "validation_reused" not in _record(shared, "d1-pt", "int8").extra


def test_a_per_tensor_int8_artifact_is_not_served_to_a_per_channel_study(shared):
    assert _record(shared, "d0-pc", "int8").compile_cached is False


def test_a_per_tensor_int8_validation_pass_is_not_served_to_a_per_channel_study(shared):
    assert "validation_reused" not in _record(shared, "d0-pc", "int8").extra


def test_the_two_draws_calibrate_on_different_subsets_with_the_same_count(shared):
    a, b = _record(shared, "d0-pt", "int8"), _record(shared, "d1-pt", "int8")
    assert a.calibration_samples == b.calibration_samples == 256 and a.logit_mse != b.logit_mse
