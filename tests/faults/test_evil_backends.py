"""Evil plugin backends: each fault becomes one record with a clear status; the run goes on; nothing outlives a job."""
from __future__ import annotations

from harness.bench.runner import run_benchmark
from tests.faults.conftest import assert_all_gone, options, pids, strict_records


def _by_backend(run_dir) -> dict[str, dict]:
    return {r["backend"]: r for r in strict_records(run_dir)}


def test_segfault_in_run_is_a_crashed_record_and_the_next_job_runs(tmp_path, model, pid_dir):
    result = run_benchmark(options(tmp_path, model, ["evil-segv-run", "onnxruntime"]))
    recs = _by_backend(result.run_dir)
    assert recs["evil-segv-run"]["status"] == "crashed"
    assert "SIGSEGV" in recs["evil-segv-run"]["error_message"]
    assert recs["onnxruntime"]["status"] == "ok"
    assert_all_gone(pids(pid_dir, "worker"))


def test_segfault_in_capabilities_at_planning_is_an_unsupported_row(tmp_path, model):
    result = run_benchmark(options(tmp_path, model, ["evil-segv-caps", "onnxruntime"]))
    recs = _by_backend(result.run_dir)
    assert recs["evil-segv-caps"]["status"] == "unsupported"
    assert recs["evil-segv-caps"]["failed_stage"] == "plan"
    assert "probe killed by signal SIGSEGV" in recs["evil-segv-caps"]["error_message"]
    assert recs["onnxruntime"]["status"] == "ok"


def test_a_hang_times_out_in_its_stage_and_the_worker_is_killed(tmp_path, model, pid_dir):
    result = run_benchmark(options(tmp_path, model, ["evil-hang"], timeout_s=15))
    (rec,) = strict_records(result.run_dir)
    assert rec["status"] == "timeout" and rec["failed_stage"] in ("warmup", "measure")
    assert_all_gone(pids(pid_dir, "worker"))


def test_a_leak_past_the_memory_limit_is_out_of_memory(tmp_path, model, pid_dir):
    result = run_benchmark(options(tmp_path, model, ["evil-leak"], memory_limit_mb=400))
    (rec,) = strict_records(result.run_dir)
    assert rec["status"] == "failed"
    assert rec["error_message"].startswith("out of memory at ")
    assert int(rec["error_message"].split()[4]) > 400            # "out of memory at N MB"
    assert rec["peak_rss_mb"] > 400
    assert_all_gone(pids(pid_dir, "worker"))


def test_nan_outputs_fail_at_validate_and_the_record_is_strict_json(tmp_path, model):
    result = run_benchmark(options(tmp_path, model, ["evil-nan"]))
    (rec,) = strict_records(result.run_dir)            # strict: a bare NaN would fail to parse
    assert rec["status"] == "failed" and rec["failed_stage"] == "validate"
    assert "non-finite" in rec["error_message"]


def test_a_wrong_output_shape_fails_at_validate(tmp_path, model):
    result = run_benchmark(options(tmp_path, model, ["evil-shape"]))
    (rec,) = strict_records(result.run_dir)
    assert rec["status"] == "failed" and rec["failed_stage"] == "validate"
    assert "shape" in rec["error_message"]


def test_a_helper_that_ignores_sigterm_does_not_outlive_its_job(tmp_path, model, pid_dir):
    result = run_benchmark(options(tmp_path, model, ["evil-helper"]))
    (rec,) = strict_records(result.run_dir)
    assert rec["status"] == "ok"
    helpers = pids(pid_dir, "helper")
    assert len(helpers) == 1
    assert_all_gone(helpers + pids(pid_dir, "worker"), within_s=5)


def test_peak_resident_memory_of_a_job_is_recorded(tmp_path, model):
    result = run_benchmark(options(tmp_path, model, ["onnxruntime"]))
    (rec,) = strict_records(result.run_dir)
    assert rec["status"] == "ok"
    assert 20 < rec["peak_rss_mb"] < 4000   # a Python + ONNX Runtime worker: tens to hundreds of MB
