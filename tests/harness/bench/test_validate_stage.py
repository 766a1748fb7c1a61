"""The worker's validation stage end to end: every output scored by role, non-finite outputs fail the job."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.bench.runner import BenchmarkOptions, run_benchmark
from harness.store.reader import read_samples
from tests.conftest import make_tiny_cnn

PLUGINS = ("tests.fakes.backends", "tests.fakes.nan_backend")


def _options(tmp_path: Path, model: Path, **kw) -> BenchmarkOptions:
    base = dict(devices=("cpu",), checkpoints=(str(model),), backends=("onnxruntime",), precisions=("fp32",),
                fidelity_only=True, eval_samples=40, calib_samples=16, results_dir=tmp_path / "results",
                prefer_full_dataset=False, plugin_modules=PLUGINS, timeout_s=120)
    base.update(kw)
    return BenchmarkOptions(**base)


def _with_tail(path: Path, tail: str) -> Path:
    """The tiny CNN with its logits passed through ``tail`` ("Softmax": probabilities; "Sqrt": NaN for x < 0)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(make_tiny_cnn(path)))
    model.graph.node.append(helper.make_node(tail, ["logits"], ["y"], name=tail.lower()))
    out = model.graph.output[0]
    out.name = "y"
    onnx.save(model, str(path))
    return path


def test_fp32_against_itself_is_an_exact_match_with_null_snr(tmp_path, tiny_model):
    record = run_benchmark(_options(tmp_path, tiny_model)).records[0]
    assert record.status == "ok", record.error_message
    assert record.exact_match is True and record.snr_db is None
    assert record.outputs[0]["name"] == "logits" and record.outputs[0]["role"] == "logits"


def test_per_sample_vectors_are_saved_for_bootstrap(tmp_path, tiny_model):
    result = run_benchmark(_options(tmp_path, tiny_model))
    record = result.records[0]
    samples = read_samples(result.run_dir / "samples" / f"{record.job_id}.npz")
    assert samples["top1_agree"].dtype == bool and samples["top1_agree"].shape == (40,)
    assert samples["top1_agree"].all()
    assert samples["top1_correct"].mean() == pytest.approx(record.top1)


def test_nan_in_backend_outputs_fails_at_validate_with_k_of_n(tmp_path, tiny_model):
    device = tmp_path / "nandev.toml"
    device.write_text('name = "nandev"\ndisplay_name = "fake"\nform_factor = "host_cpu"\n'
                      'backends = ["fake-nan"]\nprecisions = ["fp32"]\n')
    record = run_benchmark(_options(tmp_path, tiny_model, devices=(str(device),), backends=None)).records[0]
    assert (record.status, record.failed_stage) == ("failed", "validate")
    assert "1 of 1 outputs non-finite (backend): 'logits': 40 NaN, 0 Inf" in record.error_message
    assert record.top1 is None and record.outputs is None


def test_nan_in_the_fp32_reference_fails_the_job(tmp_path):
    model = _with_tail(tmp_path / "sqrt.onnx", "Sqrt")   # some logits are negative: Sqrt gives NaN
    record = run_benchmark(_options(tmp_path, model)).records[0]
    assert (record.status, record.failed_stage) == ("failed", "validate")
    assert "outputs non-finite (FP32 reference)" in record.error_message


def test_softmax_ended_classifier_gets_the_ece_of_its_logits(tmp_path):
    logits_model = make_tiny_cnn(tmp_path / "plain.onnx")
    probs_model = _with_tail(tmp_path / "soft.onnx", "Softmax")
    plain = run_benchmark(_options(tmp_path / "a", logits_model)).records[0]
    soft = run_benchmark(_options(tmp_path / "b", probs_model)).records[0]
    assert soft.primary_role == "probabilities" and soft.logit_mse is None and soft.probability_mse == 0.0
    assert soft.ece == pytest.approx(plain.ece, abs=1e-6)
    assert soft.brier == pytest.approx(plain.brier, abs=1e-6)
