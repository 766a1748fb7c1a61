"""Calibration-set sensitivity study: sizes, sources and seeds of one device policy."""
from __future__ import annotations

import numpy as np
import pytest

from harness.analysis.calib_sensitivity import SOURCES, CalibStudyOptions, markdown, run_study, summarize
from harness.data.datasets import Split

pytest.importorskip("onnxruntime")


def splits() -> tuple[Split, Split]:
    rng = np.random.default_rng(0)
    ev = Split(rng.random((48, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 48), "synthetic eval")
    ca = Split(rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64), "synthetic train")
    return ev, ca


def test_study_covers_every_source_size_and_seed(tmp_path):
    from tests.conftest import make_tiny_cnn

    model = make_tiny_cnn(tmp_path / "tiny.onnx")
    ev, ca = splits()
    study = run_study(CalibStudyOptions(checkpoints=(str(model),), sizes=(4, 32), sources=("train", "bright"),
                                        seeds=(0,), eval_samples=None), ev, ca, workdir=tmp_path / "w")
    assert sorted((r["source"], r["calibration_images"]) for r in study.rows) == \
        [("bright", 4), ("bright", 32), ("train", 4), ("train", 32)]
    assert all(r["logit_mse"] > 0 for r in study.rows)
    s = study.summary[0]
    assert s["calibration_sets"] == 4 and s["logit_mse_max_over_min"] >= 1.0
    assert "Spread across calibration sets" in markdown(study)


def test_sources_transform_the_draw_as_documented():
    x = np.full((2, 1, 4, 4), 0.5, np.float32)
    rng = np.random.default_rng(0)
    assert np.all(SOURCES["bright"](x, rng) == np.float32(0.8))
    assert np.all(SOURCES["dark"](x, rng) == np.float32(0.25))
    assert SOURCES["train"](x, rng) is x


def test_unknown_source_lists_the_valid_ones():
    with pytest.raises(ValueError, match="train, bright, dark, noisy"):
        CalibStudyOptions(sources=("sunny",))


def test_unknown_policy_lists_the_device_policies(tmp_path):
    ev, ca = splits()
    with pytest.raises(ValueError, match="w8abf16"):
        run_study(CalibStudyOptions(device="hardware_b", precision="int8"), ev, ca)


def test_summary_ratio_and_cv():
    rows = [{"checkpoint": "c", "source": "train", "calibration_images": n, "seed": 0, "logit_mse": m, "top1": t}
            for n, m, t in ((32, 0.2, 0.8), (1024, 0.1, 0.9))]
    s = summarize(rows)[0]
    assert s["logit_mse_max_over_min"] == pytest.approx(2.0)
    assert s["logit_mse_cv"] == pytest.approx(np.std([0.2, 0.1]) / 0.15)
    assert s["top1_range"] == pytest.approx(0.1)


def test_a_probabilities_model_is_summarised_by_its_probability_mse():
    # A model ending in Softmax has probability_mse, no logit_mse: the summary raised KeyError 'logit_mse'.
    from harness.analysis.calib_sensitivity import CalibStudy, markdown

    rows = [{"checkpoint": "cls", "source": "train", "calibration_images": n, "seed": 0, "logit_mse": None,
             "probability_mse": m, "top1": 0.9, "snr_db": None} for n, m in ((2, 0.06), (4, 0.03))]
    s = summarize(rows)[0]
    assert s["mse_field"] == "probability_mse" and s["probability_mse_max_over_min"] == pytest.approx(2.0)
    text = markdown(CalibStudy(rows=rows, summary=[s]))
    assert "| probability_mse |" in text and "| exact |" in text
