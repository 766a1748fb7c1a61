"""Warm runs (issue 18): the FP32 reference and complete validation passes are kept in the results folder's cache
and reused only for the same artifact, runtime, threads and data; the record says when."""
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


def test_a_pass_cut_short_by_the_budget_is_not_kept(tmp_path, tiny_model):
    records = run_benchmark(_options(tmp_path, tiny_model, "a", precisions=("fp32",), validate_budget_s=1e-9,
                                     eval_samples=200)).records
    assert records[0].eval_samples < 200
    assert not list((tmp_path / "results" / ".cache" / "outputs").glob("*.npz"))


def test_the_fp32_reference_is_computed_once_per_results_folder(tmp_path, tiny_model):
    run_benchmark(_options(tmp_path, tiny_model, "a", precisions=("fp32",)))
    [ref] = list((tmp_path / "results" / ".cache" / "references").glob("reference__tiny__*.npz"))
    written = ref.stat().st_mtime_ns
    run_benchmark(_options(tmp_path, tiny_model, "b", precisions=("fp32",)))
    assert [p.stat().st_mtime_ns for p in ref.parent.glob("reference__tiny__*.npz")] == [written]


def test_outputs_of_another_key_are_not_served(tmp_path):
    cache = OutputsCache(tmp_path)
    key = OutputsKey("job", {"artifact": "aa", "threads": 2})
    cache.put(key, ["logits"], [np.ones((3, 10), np.float32)], "run-a", "2026-01-01T00:00:00+00:00")
    assert cache.get(OutputsKey("job", {"artifact": "aa", "threads": 1}), ["logits"]) is None
    hit = cache.get(key, ["logits"])
    assert hit.run_id == "run-a" and np.array_equal(hit.outputs[0], np.ones((3, 10), np.float32))


def test_a_checkpoint_run_as_it_is_is_named_by_its_sha256(tiny_model):
    assert artifact_identity(tiny_model, tiny_model, "c0ffee") == "c0ffee"
