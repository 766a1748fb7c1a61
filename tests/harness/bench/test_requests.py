"""Requests that would do nothing (issue 13 item 7): every asked-for backend or precision the device does not offer
is a refused row with the reason; a plan with no job at all is an error naming why."""
from __future__ import annotations

import json

import pytest

from devices import load_device
from harness.bench.options import BenchmarkOptions
from harness.bench.plan import plan_jobs
from harness.bench.runner import PlanError, run_benchmark
from harness.model.checkpoint import load_checkpoint

PLUGIN = ("tests.fakes.backends",)


def _plan(tiny_model, **kw):
    opts = BenchmarkOptions(devices=("cpu",), checkpoints=(str(tiny_model),), plugin_modules=PLUGIN, **kw)
    return plan_jobs(opts, [load_device("cpu")], [load_checkpoint(tiny_model)])


@pytest.mark.parametrize("backend", ["tensorrt", "emulated", "fake-raise"])
def test_a_backend_the_device_does_not_offer_is_a_refused_row(tiny_model, backend):
    jobs = _plan(tiny_model, backends=("onnxruntime", backend), precisions=("fp32",))
    refused = [j for j in jobs if j.backend == backend]
    assert len(refused) == 1
    assert refused[0].refusal.startswith(f"device cpu does not offer backend {backend} (its backends: onnxruntime")
    assert [j.refusal for j in jobs if j.backend == "onnxruntime"] == [None]


def test_a_precision_the_device_does_not_offer_is_a_refused_row(tiny_model):
    jobs = _plan(tiny_model, backends=("onnxruntime",), precisions=("fp32", "w4a8"))
    by_precision = {j.precision: j.refusal for j in jobs}
    assert by_precision["fp32"] is None
    assert by_precision["w4a8"] == "device cpu does not offer w4a8 (its precisions: fp32, fp16, int8, int8-dynamic)"


def test_refused_requests_are_recorded_as_unsupported_at_plan(tmp_path, tiny_model):
    opts = BenchmarkOptions(devices=("cpu",), checkpoints=(str(tiny_model),), backends=("tensorrt",),
                            precisions=("fp32",), results_dir=tmp_path / "results", prefer_full_dataset=False,
                            eval_samples=8, calib_samples=4)
    result = run_benchmark(opts)
    (line,) = (result.run_dir / "records.jsonl").read_text().splitlines()
    rec = json.loads(line)
    assert (rec["status"], rec["failed_stage"]) == ("unsupported", "plan")
    assert "does not offer backend tensorrt" in rec["error_message"]


def test_a_plan_with_no_job_is_an_error_naming_why(tmp_path, tiny_model):
    dev = tmp_path / "empty.toml"
    dev.write_text('name = "empty"\ndisplay_name = "x"\nform_factor = "host_cpu"\nbackends = ["onnxruntime"]\n'
                   "precisions = []\n")
    opts = BenchmarkOptions(devices=(str(dev),), checkpoints=(str(tiny_model),), results_dir=tmp_path / "results")
    with pytest.raises(PlanError, match=r"no jobs to run: .*empty: backends onnxruntime, precisions \(none\)\)$"):
        run_benchmark(opts)
    assert not (tmp_path / "results").exists()      # refused before anything was created
