"""Warm runs (issue 18): the FP32 reference and validation passes (complete, or the prefix a budget left, which the
next run resumes) are kept in the results folder's cache and reused only for the same artifact, runtime, threads
and data; the record says when."""
from __future__ import annotations

import numpy as np

from harness.bench.outputs_cache import OutputsCache, OutputsKey, artifact_identity
from harness.bench.runner import BenchmarkOptions, run_benchmark


def _options(tmp_path, tiny_model, run_id, **kw) -> BenchmarkOptions:
    base = dict(devices=("cpu",), checkpoints=(str(tiny_model),), backends=("onnxruntime",),
                precisions=("fp32", "int8"), warmup=1, iters=5, runs=1, eval_samples=40, calib_samples=16,
                results_dir=tmp_path / "results", prefer_full_dataset=False, timeout_s=60, run_id=run_id)
    base.update(kw)
    return BenchmarkOptions(**base)


def _fidelity(record) -> tuple:
    return record.top1, record.top1_agreement, record.logit_mse, record.eval_samples


def test_a_second_run_scores_the_first_runs_validation_outputs_and_says_so(tmp_path, tiny_model):
    first = run_benchmark(_options(tmp_path, tiny_model, "a")).records
    second = run_benchmark(_options(tmp_path, tiny_model, "b")).records
    assert all("validation_reused" not in r.extra for r in first)
    assert [r.extra["validation_reused"]["run_id"] for r in second] == ["a", "a"]
    assert [_fidelity(r) for r in second] == [_fidelity(r) for r in first]


def test_revalidate_runs_every_validation_pass(tmp_path, tiny_model):
    run_benchmark(_options(tmp_path, tiny_model, "a"))
    second = run_benchmark(_options(tmp_path, tiny_model, "b", reuse_outputs=False)).records
    assert [r.status for r in second] == ["ok", "ok"]
    assert all("validation_reused" not in r.extra for r in second)


def test_a_pass_cut_short_by_the_budget_is_resumed_until_complete_and_scores_as_a_fresh_pass(tmp_path, tiny_model):
    # a budget of 1 ns stops every pass after its first batch (batch 1): each run adds one sample to the prefix
    cut = dict(precisions=("fp32",), validate_budget_s=1e-9, eval_samples=3)
    runs = [run_benchmark(_options(tmp_path, tiny_model, r, **cut)).records[0] for r in "abc"]
    fresh = run_benchmark(_options(tmp_path / "fresh", tiny_model, "f", precisions=("fp32",), eval_samples=3,
                                   validate_budget_s=None)).records[0]
    assert [r.eval_samples for r in runs] == [1, 2, 3]
    assert runs[2].extra["validation_reused"]["summary"] == ("2 samples reused from runs a (samples 0-0), "
                                                             "b (samples 1-1), 1 computed now")
    assert "validation_note" not in runs[2].extra and _fidelity(runs[2]) == _fidelity(fresh)


def test_a_resumed_prefix_says_what_it_was_scored_on(tmp_path, tiny_model):
    cut = dict(precisions=("fp32",), validate_budget_s=1e-9, eval_samples=3)
    run_benchmark(_options(tmp_path, tiny_model, "a", **cut))
    second = run_benchmark(_options(tmp_path, tiny_model, "b", **cut)).records[0]
    assert second.extra["validation_note"] == (
        "validation stopped after 0 s of this run, which resumed it after 1 sample earlier runs computed: scored "
        "on the first 2 of 3 samples (raise --validate-budget; the next run in this results folder resumes it)")


def test_the_fp32_reference_is_computed_once_per_results_folder(tmp_path, tiny_model):
    run_benchmark(_options(tmp_path, tiny_model, "a", precisions=("fp32",)))
    [ref] = list((tmp_path / "results" / ".cache" / "references").glob("reference__tiny__*.npz"))
    written = ref.stat().st_mtime_ns
    run_benchmark(_options(tmp_path, tiny_model, "b", precisions=("fp32",)))
    assert [p.stat().st_mtime_ns for p in ref.parent.glob("reference__tiny__*.npz")] == [written]


def test_outputs_of_another_key_are_not_served(tmp_path):
    cache = OutputsCache(tmp_path)
    key = OutputsKey("job", {"artifact": "aa", "threads": 2})
    runs = [{"run_id": "run-a", "computed_at": "2026-01-01T00:00:00+00:00", "first": 0, "count": 3}]
    cache.put(key, ["logits"], [np.ones((3, 10), np.float32)], 3, 3, runs)
    assert cache.get(OutputsKey("job", {"artifact": "aa", "threads": 1}), ["logits"], [0]) is None
    hit = cache.get(key, ["logits"], [0])
    assert hit.runs[0]["run_id"] == "run-a" and np.array_equal(hit.outputs[0], np.ones((3, 10), np.float32))


def test_a_checkpoint_run_as_it_is_is_named_by_its_sha256(tiny_model):
    assert artifact_identity(tiny_model, tiny_model, "c0ffee") == "c0ffee"
