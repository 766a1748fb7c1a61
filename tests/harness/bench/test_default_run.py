"""The default run's policy (issue 18): untuned TVM INT8 is left out of `python -m harness run` with the reason and
how to include it; a run that names backends or precisions, passes --all-jobs or asks TVM to tune plans it."""
from __future__ import annotations

import pytest

from devices import load_device
from harness.bench.jobs import make_job_id
from harness.bench.options import BenchmarkOptions
from harness.bench.plan import INCLUDE_TVM_INT8, PlannedJob, leave_out_of_default_run
from harness.model.checkpoint import load_checkpoint


@pytest.fixture
def jobs(tiny_model) -> list[PlannedJob]:
    device, ckpt = load_device("cpu"), load_checkpoint(tiny_model)

    def job(backend, precision, refusal=None):
        calib = "minmax" if precision == "int8" else None
        return PlannedJob(device, ckpt, backend, precision, calib, True, False,
                          make_job_id(ckpt.name, device.name, backend, precision, calib), refusal)

    return [job("onnxruntime", "int8"), job("tvm", "fp32"), job("tvm", "int8"),
            job("tvm", "int8-dynamic", refusal="tvm does not support precision 'int8-dynamic'")]


def _split(jobs, **kw):
    kept, left = leave_out_of_default_run(jobs, BenchmarkOptions(**kw))
    return [(j.backend, j.precision) for j in kept], left


def test_the_default_run_leaves_out_untuned_tvm_int8_saying_why_and_how(jobs):
    kept, left = _split(jobs)
    assert kept == [("onnxruntime", "int8"), ("tvm", "fp32"), ("tvm", "int8-dynamic")]
    assert [(j.backend, j.precision) for j in left] == [("tvm", "int8")]
    assert "naive loops" in left[0].reason and left[0].include_with == INCLUDE_TVM_INT8


@pytest.mark.parametrize("asked", [dict(backends=("tvm",)), dict(precisions=("int8",)), dict(all_jobs=True),
                                   dict(fidelity_only=True),
                                   dict(backend_options=(("tuning_trials", 64),)),
                                   dict(backend_options=(("tuning_trials_per_task", 8),))])
def test_a_run_that_asks_for_it_plans_every_job(jobs, asked):
    kept, left = _split(jobs, **asked)
    assert len(kept) == len(jobs) and left == []
