"""A validation pass cut short by its budget is kept as a prefix and resumed by the next run (issue 18: the default
run). A fake clock that advances only when the fake session runs decides where each pass stops."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.bench import loadgen
from harness.bench.outputs_cache import OutputsCache, OutputsKey
from harness.bench.validation import resume_pass
from harness.model.card import OutputCard
from harness.scoring import score_outputs
from tests.fakes.clock import FakeClock

N, CLASSES = 10, 4
KEY = OutputsKey("job", {"artifact": "aa", "threads": 2, "validate_batch": 2, "eval_samples": N})
NAMES, AXES = ["logits"], [0]


class BatchSession:
    """Logits that depend only on each sample (as a deterministic runtime's would); every run() takes 1 s on the
    fake clock and remembers which samples it was fed."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.fed = clock, []

    def run(self, feeds):
        x = feeds["x"]
        self.clock.t += 1.0
        self.fed.append([int(v) for v in x[:, 0]])
        return [np.stack([np.sin(x[:, 0] * (k + 1)) for k in range(CLASSES)], axis=1).astype(np.float32)]

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass


INPUTS = {"x": np.arange(N, dtype=np.float32).reshape(N, 1)}


def _pass(cache: OutputsCache | None, run_id: str, budget_s: float | None = 2.5, key: OutputsKey = KEY):
    """One run's validation pass at batch 2: with a 2.5 s budget and 1 s per batch it does 3 batches (6 samples)."""
    session = BatchSession(FakeClock())

    def compute(start: int):
        return loadgen.run_outputs(session, INPUTS, 2, budget_s, batch_axes=AXES, start=start, clock=session.clock)

    return resume_pass(cache, key, NAMES, AXES, 2, N, compute, run_id, "2026-11-29T17:00:00+00:00"), session


def test_a_pass_cut_by_the_budget_is_stored_as_its_prefix(tmp_path):
    cache = OutputsCache(tmp_path)
    result, _ = _pass(cache, "a")
    stored = cache.get(KEY, NAMES, AXES)
    assert (result.samples, stored.samples, stored.total, stored.complete) == (6, 6, N, False)


def test_the_next_run_resumes_at_the_first_sample_not_done_and_the_prefix_grows(tmp_path):
    cache = OutputsCache(tmp_path)
    _pass(cache, "a")
    result, session = _pass(cache, "b")
    assert session.fed == [[6, 7], [8, 9]]
    assert cache.get(KEY, NAMES, AXES).samples == result.samples == N


def test_the_joined_outputs_are_a_complete_passs_outputs(tmp_path):
    cache = OutputsCache(tmp_path)
    _pass(cache, "a")
    resumed, _ = _pass(cache, "b")
    fresh, _ = _pass(None, "c", budget_s=None)
    assert np.array_equal(resumed.outputs[0], fresh.outputs[0])


def test_scores_on_the_joined_prefix_equal_a_fresh_passs_scores(tmp_path):
    cache = OutputsCache(tmp_path)
    _pass(cache, "a", budget_s=0.5)           # 1 batch: samples 0-1
    resumed, _ = _pass(cache, "b", budget_s=1.5)   # 2 more: samples 2-5
    fresh, _ = _pass(None, "c", budget_s=None)
    card = [OutputCard(name="logits", role="logits", batch_axis=0, class_axis=1)]
    reference = [fresh.outputs[0] + np.float32(0.01)]
    labels = np.arange(N) % CLASSES
    n = resumed.samples
    scored = score_outputs(resumed.outputs, [reference[0][:n]], card, labels[:n])
    expected = score_outputs([fresh.outputs[0][:n]], [reference[0][:n]], card, labels[:n])
    assert n == 6 and scored.fields == expected.fields


def test_a_complete_pass_is_served_without_running_and_names_every_run(tmp_path):
    cache = OutputsCache(tmp_path)
    _pass(cache, "a")
    _pass(cache, "bb")
    result, session = _pass(cache, "ccc")
    assert session.fed == []
    assert result.reused["summary"] == "10 samples reused from runs a (samples 0-5), bb (samples 6-9), 0 computed now"


def test_the_record_states_reused_and_computed_counts(tmp_path):
    cache = OutputsCache(tmp_path)
    _pass(cache, "a")
    result, _ = _pass(cache, "bb")
    fact = result.reused
    assert (fact["samples_reused"], fact["samples_computed"], fact["run_id"]) == (6, 4, "a")
    assert fact["summary"] == "6 samples reused from run a, 4 computed now"


def test_a_fresh_pass_reuses_nothing(tmp_path):
    result, _ = _pass(OutputsCache(tmp_path), "a")
    assert result.reused is None


def test_a_key_change_misses_the_stored_prefix(tmp_path):
    cache = OutputsCache(tmp_path)
    _pass(cache, "a")
    other = OutputsKey("job", {**KEY.parts, "threads": 1})
    result, session = _pass(cache, "b", key=other)
    assert session.fed[0] == [0, 1] and result.reused is None


@pytest.mark.parametrize("damage", ["truncate_npz", "shorter_meta"])
def test_a_torn_partial_file_is_recomputed_from_the_start(tmp_path, damage):
    cache = OutputsCache(tmp_path)
    _pass(cache, "a")
    npz, meta = (Path(tmp_path) / f"{KEY.stem}.npz"), (Path(tmp_path) / f"{KEY.stem}.json")
    if damage == "truncate_npz":
        npz.write_bytes(npz.read_bytes()[:100])
    else:  # a writer killed between the arrays and the key file: the metadata states another length
        meta.write_text(meta.read_text().replace('"samples_done": 6', '"samples_done": 4'))
    result, session = _pass(cache, "b")
    assert session.fed[0] == [0, 1] and result.reused is None and cache.get(KEY, NAMES, AXES).samples == 6


def test_a_complete_file_from_before_prefixes_were_kept_is_served(tmp_path):
    import json

    cache = OutputsCache(tmp_path)
    full = np.ones((N, CLASSES), np.float32)
    cache.put(KEY, NAMES, [full], N, N, [{"run_id": "old", "computed_at": "t", "first": 0, "count": N}])
    meta = tmp_path / f"{KEY.stem}.json"
    old = json.loads(meta.read_text())
    meta.write_text(json.dumps({k: old[k] for k in ("key", "parts", "run_id", "computed_at")}))
    stored = cache.get(KEY, NAMES, AXES)
    assert (stored.samples, stored.complete, stored.runs[0]["run_id"]) == (N, True, "old")


def test_a_pass_resumed_off_a_batch_boundary_is_refused():
    session = BatchSession(FakeClock())
    with pytest.raises(ValueError, match="batch boundary"):
        loadgen.run_outputs(session, INPUTS, 4, start=2)


def test_the_summary_names_the_first_three_runs_of_a_long_resumed_pass(tmp_path):
    cache = OutputsCache(tmp_path)
    for run in "abcd":
        _pass(cache, run, budget_s=0.5)   # one batch (2 samples) per run
    result, _ = _pass(cache, "e", budget_s=0.5)
    assert result.reused["summary"] == ("8 samples reused from runs a (samples 0-1), b (samples 2-3), c (samples 4-5) "
                                        "and 1 more, 2 computed now")
    assert [r["run_id"] for r in result.reused["runs"]] == ["a", "b", "c", "d"]
