"""The worker's validation stage: the pass over the evaluation set (resumed or reused from the results folder's
outputs cache, harness.bench.outputs_cache) and its scoring against the FP32 reference.

A pass is a deterministic function of its key (artifact bytes, runtime and version, precision, options, threads,
batch, data), so the outputs of samples ``0..k-1`` an earlier run computed are the outputs this run would compute.
A pass the validation budget cut short is stored as that prefix; the next run with the same key feeds only the
samples after it, in the very batches a pass from 0 would have fed (``loadgen.run_outputs(start=k)``), joins the
two and scores the joined prefix exactly as a fresh pass of that length; ``extra.validation_reused`` says how many
samples were reused from which runs and how many were computed now.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.bench import loadgen
from harness.bench.outputs_cache import OutputsCache, OutputsKey, Stored, outputs_key, write_npz_atomic
from harness.bench.stages import StageError
from harness.model.checkpoint import Checkpoint
from harness.scoring import NonFiniteOutputs, score_outputs


def output_cards(ckpt: Checkpoint) -> list[Any]:
    """One OutputCard per graph output, in graph order: the run's effective card, else what can be inferred."""
    card = ckpt.card
    if card is None:
        from harness.model.card import infer_card

        card = infer_card(ckpt)
    return [card.output(t.name) for t in ckpt.outputs]


def batch_axes(ckpt: Checkpoint) -> list[int]:
    """Each output's batch axis, from its card."""
    return [int(c.batch_axis) for c in output_cards(ckpt)]


@dataclass(frozen=True)
class PassResult:
    """A validation pass's outputs (one array per output, the first ``samples`` evaluation samples on each
    output's batch axis), what the record says about reuse (``extra.validation_reused``; None when nothing was
    reused) and why the cache could not keep it (None when it did, or when there is no cache)."""

    outputs: list[np.ndarray]
    samples: int
    reused: dict[str, Any] | None
    cache_error: str | None = None


#: How many of the runs that computed a reused prefix its summary names (the record's ``runs`` lists them all).
_NAMED_RUNS = 3


def reuse_fact(stored: Stored, computed: int) -> dict[str, Any]:
    """``extra.validation_reused``: ``samples_reused`` (the stored prefix), ``samples_computed`` (by this run),
    ``runs`` (who computed which samples), ``run_id`` (their ids, comma-joined), ``computed_at`` (when the prefix
    was last extended), ``file`` and ``summary``, e.g. "120 samples reused from run cold, 80 computed now"."""
    ids = [str(r.get("run_id")) for r in stored.runs]
    if len(ids) == 1:
        source = f"run {ids[0]}"
    else:  # a slow backend may take many runs to finish a pass: the summary names the first few
        named = [f"{r.get('run_id')} (samples {r['first']}-{r['first'] + r['count'] - 1})"
                 for r in stored.runs[:_NAMED_RUNS]]
        more = len(stored.runs) - _NAMED_RUNS
        source = "runs " + ", ".join(named) + (f" and {more} more" if more > 0 else "")
    return {"run_id": ", ".join(dict.fromkeys(ids)), "computed_at": stored.runs[-1].get("computed_at"),
            "file": stored.file, "samples_reused": stored.samples, "samples_computed": int(computed),
            "runs": [dict(r) for r in stored.runs],
            "summary": f"{_samples(stored.samples)} reused from {source}, {computed} computed now"}


def _samples(k: int) -> str:
    return f"{k} sample" + ("" if k == 1 else "s")


def resume_pass(cache: OutputsCache | None, key: OutputsKey | None, names: Sequence[str], axes: Sequence[int],
                batch: int, total: int, compute: Callable[[int], list[np.ndarray]], run_id: str,
                computed_at: str) -> PassResult:
    """The validation outputs of the first ``samples`` of ``total`` evaluation samples (``names``/``axes``: each
    output's name and batch axis; ``batch``: the pass's batch; ``run_id``/``computed_at``: this run, stored with
    the samples it computes): served whole when the cache holds the complete pass; else ``compute(start)``
    (the outputs of samples ``start..``, as far as its budget goes) run from the first sample the cache does not
    hold (0 without a cache, a key, or a usable prefix), joined to the stored prefix, and the joined prefix stored
    for the next run. A stored prefix that is not a whole number of batches (not written by this code) is a miss.
    """
    stored = cache.get(key, names, axes) if cache is not None and key is not None else None
    if stored is not None and stored.complete:
        return PassResult(stored.outputs, stored.samples, reuse_fact(stored, 0))
    if stored is not None and stored.samples % batch:
        stored = None
    start = stored.samples if stored is not None else 0
    new = compute(start)
    outputs = new if stored is None else [np.concatenate([old, o], axis=ax)
                                          for old, o, ax in zip(stored.outputs, new, axes)]
    samples = int(outputs[0].shape[axes[0]])
    computed = samples - start
    reused = reuse_fact(stored, computed) if stored is not None else None
    error = None
    if cache is not None and key is not None:
        runs = [*(stored.runs if stored is not None else ()),
                {"run_id": run_id, "computed_at": computed_at, "first": start, "count": computed}]
        try:
            cache.put(key, names, outputs, samples, total, runs)
        except OSError as exc:  # a full disk costs the next run a pass, not this job
            error = f"{type(exc).__name__}: {exc}"[:300]
    return PassResult(outputs, samples, reused, error)


def validation_outputs(spec, session, compiled, data, out: dict[str, Any], axes: Sequence[int],
                       clock: Callable[[], float] = time.perf_counter) -> list[np.ndarray]:
    """Every output on the evaluation set (loadgen.run_outputs within ``spec.validate_budget_s``; ``data`` is the
    worker's JobData, ``axes`` each output's batch axis), resumed from or served by the outputs an earlier run
    computed for the same artifact, runtime, threads, batch and data (``spec.outputs_cache``; None: always
    computed, nothing kept). Sets ``out["extra"]["validation_reused"]`` when anything was reused and
    ``validation_cache_error`` when the cache could not be written."""
    validate_batch = int(compiled.metadata.get("validate_batch", spec.validate_batch))
    pad_last = data.model.fixed_batch is not None
    names = list(data.model.output_names)
    key = outputs_key(spec, compiled, data, out, validate_batch, pad_last) if spec.outputs_cache else None
    cache = OutputsCache(spec.outputs_cache) if key is not None else None

    def compute(start: int) -> list[np.ndarray]:
        return loadgen.run_outputs(session, data.eval_inputs, validate_batch, spec.validate_budget_s,
                                   batch_axes=axes, pad_last=pad_last, start=start, clock=clock)

    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    result = resume_pass(cache, key, names, axes, validate_batch, data.eval_count, compute, spec.run_id, now)
    extra = out.setdefault("extra", {})
    if result.reused is not None:
        extra["validation_reused"] = result.reused
    if result.cache_error is not None:
        extra["validation_cache_error"] = result.cache_error
    return result.outputs


def load_outputs(path: str | Path, ckpt: Checkpoint) -> list[np.ndarray]:
    """The saved outputs (an .npz, one array per output name) in the checkpoint's output order."""
    with np.load(path) as z:
        missing = [t.name for t in ckpt.outputs if t.name not in z.files]
        if missing:
            raise StageError("validate", "failed", f"the FP32 reference {path} lacks outputs {missing}")
        return [z[t.name] for t in ckpt.outputs]


def _prefix_note(spec, n: int, total: int, extra: dict[str, Any]) -> str:
    """The record's ``validation_note`` for a pass scored on its first ``n`` of ``total`` samples."""
    reused = extra.get("validation_reused")
    budget = f"{spec.validate_budget_s:.0f} s" if spec.validate_budget_s is not None else "its budget"
    where = ""
    if reused:
        where = f" of this run, which resumed it after {_samples(reused['samples_reused'])} earlier runs computed"
    kept = spec.outputs_cache and not extra.get("validation_cache_error")
    more = "; the next run in this results folder resumes it" if kept else ""
    return f"validation stopped after {budget}{where}: scored on the first {n} of {total} samples " \
           f"(raise --validate-budget{more})"


def score_validation(spec, outputs: list[np.ndarray], data, out: dict[str, Any]) -> None:
    """Every output scored by its role against the same FP32 reference output (and the labels), on the samples
    the pass reached; a prefix says so in ``validation_note``. Raises StageError (wrong output count or shape,
    NaN/Inf outputs, a card that does not fit its output)."""
    ckpt = data.model
    reference = load_outputs(spec.reference_path, ckpt)
    cards = output_cards(ckpt)
    labels = data.eval_labels
    n = outputs[0].shape[cards[0].batch_axis]
    total = data.eval_count
    if n < total:
        out["validation_note"] = _prefix_note(spec, n, total, out.get("extra") or {})
        reference = [np.take(r, np.arange(n), axis=c.batch_axis) for r, c in zip(reference, cards)]
        labels = None if labels is None else labels[:n]
    if len(outputs) != len(reference):
        raise StageError("validate", "failed", f"the backend returned {len(outputs)} outputs; the FP32 reference has "
                                               f"{len(reference)} ({', '.join(ckpt.output_names)})")
    for t, o, r in zip(ckpt.outputs, outputs, reference):
        if o.shape != r.shape:
            raise StageError("validate", "failed", f"output {t.name} has shape {o.shape}; the reference's is {r.shape}")
    try:
        scores = score_outputs(outputs, reference, cards, labels)
    except (NonFiniteOutputs, ValueError) as exc:  # NaN/Inf, or a card that does not fit its output
        raise StageError("validate", "failed", str(exc)) from None
    out.update(scores.fields)
    out["outputs"] = scores.per_output
    out["eval_samples"] = int(n)
    if spec.samples_path and scores.per_sample:
        # bool vectors over the scored images, for the views' bootstrap confidence intervals
        write_npz_atomic(spec.samples_path, scores.per_sample)
