"""The worker's stage clock: each record carries where its job's time went (extra.stage_s), read on a fake clock."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.bench.stages import StageTracker
from tests.fakes.clock import FakeClock


def test_stages_and_laps_add_up_to_the_seconds_each_took(tmp_path):
    clock = FakeClock()
    tracker = StageTracker(SimpleNamespace(stage_path=str(tmp_path / "stage")), clock=clock)
    with tracker.lap("compile"):
        clock.t += 2.0
    tracker.enter("load")
    clock.t += 0.5
    tracker.enter("validate")
    clock.t += 3.0
    with tracker.lap("score"):
        clock.t += 0.25
    clock.t += 9.0  # after the last step: counted nowhere
    assert tracker.seconds() == {"compile": 2.0, "load": 0.5, "validate": 3.0, "score": 0.25}
    assert (tmp_path / "stage").read_text() == "validate"


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    from harness.bench.runner import BenchmarkOptions, run_benchmark
    from tests.conftest import make_tiny_cnn

    tmp = tmp_path_factory.mktemp("stages")
    options = BenchmarkOptions(devices=("cpu",), checkpoints=(str(make_tiny_cnn(tmp / "tiny.onnx")),),
                               backends=("onnxruntime",), precisions=("fp32",), warmup=1, iters=5, runs=1,
                               eval_samples=20, results_dir=tmp / "results", prefer_full_dataset=False, timeout_s=60)
    [record] = run_benchmark(options).records
    return record


def test_every_ok_record_says_where_its_jobs_time_went(record):
    assert list(record.extra["stage_s"]) == ["startup", "prepare", "compile", "model_facts", "load", "warmup",
                                             "measure", "validate", "score"]
    assert all(v >= 0 for v in record.extra["stage_s"].values())


def test_every_record_of_a_reaped_worker_has_its_cpu_seconds(record):
    assert record.extra["worker_cpu_s"] > 0
