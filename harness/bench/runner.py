"""Run a benchmark: plan, prepare data and the FP32 reference, launch every job, append every record.

The manifest and the resume check live in harness.bench.manifest; the FP32 reference's runtime, cache file and
computation in harness.bench.reference.

The route of one job: BenchmarkOptions (options.py) -> PlannedJob (plan.py) -> JobSpec (jobs.py, JSON to the
worker process) -> JobRecord (harness.store.records).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import backends
from backends.options import options_class, options_for
from devices import DeviceProfile
from devices.numerics import is_integer_precision, takes_calibration
from harness.data.loaders import Dataset, save_job_data
from harness.data.prepare import describe as describe_data, prepare_datasets
from harness.host import hostinfo
from harness.bench.jobs import JobSpec
from harness.bench.launch import Launch, Launcher, LocalLauncher
from harness.bench.manifest import build_manifest, check_resume, write_cards
from harness.bench.options import BenchmarkOptions
from harness.bench.plan import LeftOut, PlannedJob, leave_out_of_default_run, resolve_checkpoints, validate_names
from harness.bench.reference import (compute_reference, reference_job, reference_path, reference_runtime_label,
                                    reference_runtime_name, reusable)
from harness.model.card import effective_card
from harness.model.checkpoint import Checkpoint, check_feedable
from harness.store.records import JobRecord
from harness.store.writer import RunStore, StoreError, new_run_id

#: Backends that execute on the host CPU when the profiled device is absent.
HOST_CPU_BACKENDS = ("onnxruntime", "openvino", "tvm", "litert")


class PlanError(ValueError):
    """The request plans no job at all; the message says why and what would plan one."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run; the records written so far are kept and the run can be resumed."""

    def __init__(self, run_id: str, run_dir: Path, records_written: int) -> None:
        super().__init__(run_id)
        self.run_id, self.run_dir, self.records_written = run_id, run_dir, records_written


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    records: list[JobRecord] = field(default_factory=list)
    eval_source: str = ""
    #: Jobs in the plan (records written by earlier attempts of a resumed run included).
    planned: int = 0
    #: Jobs the default run's policy did not plan, with why and how to include them (harness.bench.plan).
    left_out: list[LeftOut] = field(default_factory=list)


def prepare_data(options: BenchmarkOptions, store: RunStore, checkpoint: Checkpoint, needs_calibration: bool = True
                 ) -> tuple[Path, str, Dataset]:
    """Evaluation (and calibration) inputs of one checkpoint, written to the worker's data file.

    Returns (data file, the eval_source line of the records, the evaluation set).
    """
    evaluation, calib = prepare_datasets(options.data_request(), checkpoint, checkpoint.card, needs_calibration)
    path = store.layout.data_file(checkpoint.name)
    save_job_data(path, evaluation, calib)
    return path, describe_data(evaluation, calib), evaluation


def attach_card(checkpoint: Checkpoint, options: BenchmarkOptions) -> Checkpoint:
    """The checkpoint with its effective model card (--model-card, else <stem>.card.toml beside it, else inferred)."""
    return dataclasses.replace(checkpoint, card=effective_card(checkpoint, options.model_card_path))


def data_digest(data_path: Path) -> str:
    """sha256 over every array of a job data file, in key order (what a resumed run must share)."""
    h = hashlib.sha256()
    with np.load(data_path, allow_pickle=False) as data:
        _hash_arrays(h, data, sorted(data.files))
    return h.hexdigest()


def eval_digest(data_path: Path) -> str:
    """sha256 over the evaluation arrays of a job data file (every ``eval_*`` array, in key order, with the input
    names): what the FP32 reference and a validation pass read. The calibration arrays are left out: a pass over an
    artifact built from them is named by the artifact's bytes (harness.bench.outputs_cache), so studies that
    differ only in the calibration draw share the FP32 reference and the passes of uncalibrated jobs."""
    import json

    h = hashlib.sha256()
    with np.load(data_path, allow_pickle=False) as data:
        if "meta" in data.files:
            h.update(json.dumps(json.loads(str(data["meta"])).get("eval", {}).get("names")).encode())
        _hash_arrays(h, data, sorted(k for k in data.files if k.startswith("eval_")))
    return h.hexdigest()


def _hash_arrays(h: Any, data: Any, keys: Sequence[str]) -> None:
    """Feed ``h`` each named array of the open .npz ``data``: its name, dtype and shape, then its bytes."""
    for key in keys:
        arr = np.ascontiguousarray(data[key])
        h.update(f"{key}{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes())


def _base_fields(run_id: str, job: PlannedJob, options: BenchmarkOptions, loop: dict[str, int]) -> dict[str, Any]:
    return {
        "run_id": run_id, "job_id": job.job_id, "device": job.device.name, "backend": job.backend,
        "precision": job.precision, "checkpoint": job.checkpoint.name, "checkpoint_sha256": job.checkpoint.sha256,
        "calibration_method": job.calibration, "per_channel": job.per_channel if is_integer_precision(job.precision) else None,
        # What was asked; the worker replaces it with what the backend built when the adapter says.
        "activation_signed": job.activation_signed if is_integer_precision(job.precision) else None,
        "batch_size": options.batch, "warmup_iters": loop["warmup"], "timed_iters": loop["iters"], "runs": loop["runs"],
        "quick": options.quick,
    }


def _spec_for(job: PlannedJob, mode: str, run_id: str, options: BenchmarkOptions, store: RunStore,
              data_paths: dict[str, Path], reference_path: Path, loop: dict[str, int],
              data_digests: dict[str, str] | None = None) -> JobSpec:
    data_digests = data_digests or {}
    tag = job.job_id if mode == "measure" else f"reference__{job.checkpoint.name}"
    device_ref = next((d for d in options.devices if d == job.device.name or Path(d).stem == job.device.name),
                      job.device.name)
    return JobSpec(
        run_id=run_id, job_id=job.job_id, mode=mode, device=device_ref, backend=job.backend,
        precision=job.precision, checkpoint=job.checkpoint.name, checkpoint_path=str(job.checkpoint.path),
        calibration=job.calibration, per_channel=job.per_channel, activation_signed=job.activation_signed,
        data_path=str(data_paths[job.checkpoint.name]), reference_path=str(reference_path),
        # per-attempt names: a file left by a killed attempt is never read as this attempt's
        result_path=str(store.attempt_file(tag, "result.json")), stage_path=str(store.attempt_file(tag, "stage")),
        latency_path=str(store.attempt_file(tag, "latency.npy")),
        samples_path=str(store.attempt_file(tag, "samples.npz")) if mode == "measure" else None,
        workdir=str(store.layout.artifact_cache), warmup=loop["warmup"], iters=loop["iters"],
        runs=loop["runs"], batch=options.batch, validate_batch=job.checkpoint.fixed_batch or 1,
        validate_budget_s=options.validate_budget_s if mode == "measure" else None, fidelity_only=options.fidelity_only,
        threads=options.threads, cpu_affinity=options.cpu_affinity, power_period_ms=options.power_period_ms, power_estimate=options.power_estimate,
        power_source_options=_source_options(options.power_source_options), host_substitute=job.host_substitute,
        calibration_table=str(job.checkpoint.calibration_table) if job.checkpoint.calibration_table else None,
        qdq_path=str(job.checkpoint.qdq_path) if job.checkpoint.qdq_path else None,
        plugin_modules=options.plugin_modules, options=_options_for(job.backend, options.backend_options),
        target=options.target, model=job.checkpoint.to_dict(), scenario=options.scenario,
        offline_max_batch=options.offline_max_batch, offline_latency_limit_ms=options.offline_latency_limit_ms,
        memory_limit_mb=options.memory_limit_mb, data_sha256=data_digests.get(job.checkpoint.name),
        outputs_cache=str(store.layout.outputs_cache) if mode == "measure" and options.reuse_outputs else None,
    )


def _options_for(backend: str, pairs: Sequence[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """The run's --backend-option pairs this backend knows, typed (planning refused keys nobody knows).

    TVM jobs also search the bundled pre-tuned databases (harness/assets/tvm-tuning) unless the run names its own
    ``tuning_db``: the demo checkpoints then run tuned on the x86-64 targets the bundle was tuned for."""
    try:
        cls = backends.get_backend(backend)
    except KeyError:
        return tuple(pairs)  # an unregistered backend's job is an unsupported row; nothing reads its options
    if "tuning_db" in options_class(cls).keys() and not any(k == "tuning_db" for k, _ in pairs):
        from harness.model.checkpoint import BUNDLED_TVM_TUNING_DIR

        if BUNDLED_TVM_TUNING_DIR.is_dir():
            pairs = (*pairs, ("tuning_db", str(BUNDLED_TVM_TUNING_DIR)))
    return options_for(cls, pairs)


def _source_options(triples: Sequence[tuple[str, str, Any]]) -> dict[str, dict[str, Any]] | None:
    out: dict[str, dict[str, Any]] = {}
    for source, key, value in triples:
        out.setdefault(source, {})[key] = list(value) if isinstance(value, tuple) else value
    return out or None


ProgressFn = Callable[[str, int, int], None]


def run_benchmark(options: BenchmarkOptions, progress: ProgressFn | None = None,
                  warn: Callable[[str], None] | None = None, info: Callable[[str], None] | None = None,
                  launcher: Launcher | None = None) -> RunResult:
    """Run every planned job; records are written as they finish, so an interruption loses nothing.

    ``launcher`` decides where jobs run: this host, one child process at a time (default), or a fleet
    (``harness.fleet.launcher.DaskLauncher``). The FP32 reference is always computed here.

    Raises PlanError when nothing is planned, StoreError when the run folder cannot be used (exists, locked,
    resumed with different options or data), RunInterrupted on Ctrl-C/SIGTERM (records kept).
    """
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    info = info or (lambda msg: print(msg, file=sys.stderr))
    launcher = launcher or LocalLauncher(warn)
    devices = validate_names(options)
    checkpoints = [attach_card(c, options) for c in resolve_checkpoints(options.checkpoints)]
    jobs, left_out = leave_out_of_default_run(launcher.plan(options, devices, checkpoints), options)
    if not jobs:
        raise PlanError(_why_no_jobs(options, devices, checkpoints))
    run_id = options.run_id or new_run_id()
    with RunStore(options.results_dir, run_id, resume=options.resume) as store:
        old_manifest = store.read_manifest() if options.resume else None
        if old_manifest is not None:
            check_resume(old_manifest, options, checkpoints, store)
        for ckpt in checkpoints:
            if ckpt.card.inferred:
                info(f"model card of {ckpt.name} ({ckpt.card.source}), assumed:\n  " + "\n  ".join(ckpt.card.inferred))
        data = _prepare_all_data(options, store, checkpoints, jobs, old_manifest)
        eval_source = "; ".join(dict.fromkeys(data.sources.values()))
        checkpoints = [data.models[c.name] for c in checkpoints]   # symbolic dimensions fixed from the data
        manifest, warnings = build_manifest(options, devices, checkpoints, eval_source, run_id, data.notes)
        manifest["data_sha256"] = data.digests
        manifest["left_out"] = [j.to_dict() for j in left_out]
        manifest.update(launcher.manifest_facts())
        store.write_manifest(manifest)
        write_cards(store.run_dir, checkpoints)
        for w in warnings:
            warn(w)
        result = RunResult(run_id, store.run_dir, eval_source=eval_source, planned=len(jobs), left_out=left_out)
        before = len(store.finished_job_ids())
        try:
            _run_jobs(jobs, options, store, data, result, progress, launcher)
        except KeyboardInterrupt:
            # Counted from the file: a signal landing between the write and the bookkeeping must not hide a record.
            raise RunInterrupted(run_id, store.run_dir, len(store.finished_job_ids()) - before) from None
        if {j.job_id for j in jobs} <= store.finished_job_ids():
            store.remove_work()   # the run is complete; on failure work/ stays for inspection
    return result


@dataclass(frozen=True)
class RunData:
    """Per checkpoint: the worker's data file, the records' eval_source line, the data's sha256, notes."""

    paths: dict[str, Path]
    sources: dict[str, str]
    #: sha256 of the whole data file (data_digest): a resumed run must have the same.
    digests: dict[str, str]
    notes: dict[str, list[str]]
    #: The checkpoints with their symbolic dimensions fixed from this data (what every job compiles for).
    models: dict[str, Checkpoint] = field(default_factory=dict)
    #: sha256 of the evaluation arrays only (eval_digest): the key of the FP32 reference and validation passes.
    eval_digests: dict[str, str] = field(default_factory=dict)


def _prepare_all_data(options: BenchmarkOptions, store: RunStore, checkpoints: Sequence[Checkpoint],
                      jobs: Sequence[PlannedJob], old_manifest: dict[str, Any] | None) -> RunData:
    paths: dict[str, Path] = {}
    sources: dict[str, str] = {}
    digests: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    models: dict[str, Checkpoint] = {}
    old_digests = (old_manifest or {}).get("data_sha256") or {}
    for ckpt in checkpoints:
        needs = any(j.checkpoint.name == ckpt.name and j.refusal is None and takes_calibration(j.precision)
                    for j in jobs) or not options.data_path
        paths[ckpt.name], sources[ckpt.name], evaluation = prepare_data(options, store, ckpt, needs)
        notes[ckpt.name] = list(evaluation.notes)
        digests[ckpt.name] = data_digest(paths[ckpt.name])
        old = old_digests.get(ckpt.name) if isinstance(old_digests, dict) else None
        if old is not None and old != digests[ckpt.name]:
            raise StoreError(f"cannot resume run {store.run_id!r}: the data of {ckpt.name} differ from the run's "
                             f"first attempt (first: {(old_manifest or {}).get('eval_source')}; now: "
                             f"{sources[ckpt.name]}); resume with the same data options, or start a new run")
        if len(evaluation.inputs) == 1 and len(ckpt.inputs) == 1:
            check_feedable(ckpt, tuple(evaluation.first.shape[1:]), sources[ckpt.name])
            shapes = {ckpt.input_name: tuple(evaluation.first.shape[1:])}
        else:
            shapes = {name: tuple(a.shape[1:]) for name, a in evaluation.inputs.items()}
        # Symbolic dimensions are fixed from the data once, here; every job compiles for these shapes.
        models[ckpt.name] = ckpt.with_data_shapes(shapes)
    return RunData(paths, sources, digests, notes, models, {name: eval_digest(p) for name, p in paths.items()})


def _run_jobs(jobs: Sequence[PlannedJob], options: BenchmarkOptions, store: RunStore, data: RunData,
              result: RunResult, progress: ProgressFn | None, launcher: Launcher) -> None:
    run_id = store.run_id
    loop = options.loop()
    done = store.finished_job_ids()
    references: dict[str, Path | str] = {}
    submitted: dict[str, tuple[PlannedJob, dict[str, Any], JobSpec]] = {}

    def finish(job: PlannedJob, base: dict[str, Any], outcome: dict[str, Any], started: str, took_s: float) -> None:
        if data.notes.get(job.checkpoint.name):   # resizing, label mapping, the calibration split: in the record
            outcome["extra"] = {**(outcome.get("extra") or {}), "data_notes": data.notes[job.checkpoint.name]}
        record = _to_record(base, outcome, job, data.sources[job.checkpoint.name], started, took_s)
        store.append(record)
        result.records.append(record)

    def collect(block: bool) -> None:
        for c in launcher.results(block):
            job, base, spec = submitted.pop(c.job_id)
            _keep_latencies(spec, store, job, c.outcome)
            _keep_samples(spec, store, job, c.outcome)
            finish(job, base, c.outcome, c.started_at, c.duration_s)

    for index, job in enumerate(jobs):
        if job.job_id in done:
            continue
        if progress:
            progress(job.job_id, index, len(jobs))
        job = dataclasses.replace(job, checkpoint=data.models.get(job.checkpoint.name, job.checkpoint))
        base = _base_fields(run_id, job, options, loop)
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        if job.refusal is not None:
            outcome: dict[str, Any] = {"status": "unsupported", "failed_stage": "plan", "error_message": job.refusal}
        else:
            ref = references.get(job.checkpoint.name)
            if ref is None:
                ref = _make_reference(job, run_id, options, store, data, loop)
                references[job.checkpoint.name] = ref
            if isinstance(ref, str):
                outcome = {"status": "failed", "failed_stage": "validate", "error_message":
                           f"the FP32 {reference_runtime_name(job.checkpoint)} reference could not be computed: {ref}"}
            else:
                spec = _spec_for(job, "measure", run_id, options, store, data.paths, ref, loop, data.eval_digests)
                submitted[job.job_id] = (job, base, spec)
                launcher.submit(Launch(job.job_id, job.device.name, spec, options.timeout_s,
                                       store.attempt_file(job.job_id, "log"), options.memory_limit_mb))
                collect(block=False)
                continue
        finish(job, base, outcome, started, time.perf_counter() - t0)
    collect(block=True)
    if progress:
        progress("done", len(jobs), len(jobs))


def _keep_latencies(spec: JobSpec, store: RunStore, job: PlannedJob, outcome: dict[str, Any]) -> None:
    """Move this attempt's raw latencies to latencies/<job_id>.npy (only a finished attempt's file is kept)."""
    attempt_file = Path(spec.latency_path)
    if outcome.get("status") == "ok" and attempt_file.exists():
        final = store.layout.latency_file(job.job_id)
        os.replace(attempt_file, final)
        outcome["raw_latency_file"] = final.name
    else:
        outcome.pop("raw_latency_file", None)


def _keep_samples(spec: JobSpec, store: RunStore, job: PlannedJob, outcome: dict[str, Any]) -> None:
    """Move this attempt's per-sample vectors to samples/<job_id>.npz (only an ok attempt's file is kept)."""
    attempt_file = Path(spec.samples_path) if spec.samples_path else None
    if attempt_file is not None and outcome.get("status") == "ok" and attempt_file.exists():
        os.replace(attempt_file, store.layout.samples_file(job.job_id))


def _why_no_jobs(options: BenchmarkOptions, devices: Sequence[DeviceProfile], checkpoints: Sequence[Checkpoint]
                 ) -> str:
    if not checkpoints:
        return "no jobs to run: no checkpoint was found; pass --checkpoint PATH"
    offered = "; ".join(f"{d.name}: backends {', '.join(d.backends) or '(none)'}, precisions "
                        f"{', '.join(d.precisions) or '(none)'}" for d in devices)
    return (f"no jobs to run: the request (backends {', '.join(options.backends or ('all',))}, precisions "
            f"{', '.join(options.precisions or ('all',))}) selects nothing the device offers ({offered})")


def _make_reference(job: PlannedJob, run_id: str, options: BenchmarkOptions, store: RunStore, data: RunData,
                    loop: dict[str, int]) -> Path | str:
    """The checkpoint's FP32 reference file (cached, else computed in a child), or why it could not be computed."""
    ref_path = reference_path(job.checkpoint, options, store, data.eval_digests[job.checkpoint.name])
    if reusable(ref_path):
        return ref_path
    spec = _spec_for(reference_job(job), "reference", run_id, options, store, data.paths, ref_path, loop)
    return compute_reference(spec, options, store)


def _to_record(base: dict[str, Any], outcome: dict[str, Any], job: PlannedJob, eval_source: str, started: str,
               duration_s: float) -> JobRecord:
    fields = dict(base)
    fields.update({k: v for k, v in outcome.items() if v is not None or k in ("failed_stage",)})
    status = fields.get("status", "failed")
    fields["reference_runtime"] = reference_runtime_label(job.checkpoint)
    if job.checkpoint.data_shapes:
        fields["input_shapes"] = {n: list(shape) for n, shape in job.checkpoint.data_shapes}
    if status == "ok":
        fields["eval_source"] = eval_source
        if fields.get("measured_on"):
            pass  # said by the launcher that ran it (a fleet worker names its host)
        elif job.host_substitute and job.backend in HOST_CPU_BACKENDS:
            fields["measured_on"] = "host cpu (" + hostinfo.host_facts()["cpu_model"] + ")"
            note = f"{job.device.name} is not this host: timed on the host CPU, not on the device"
            fields["timing_note"] = f"{fields['timing_note']}; {note}" if fields.get("timing_note") else note
        elif job.host_substitute:
            fields["measured_on"] = "host (simulator/emulation)"
        else:
            fields["measured_on"] = job.device.name
        if fields.get("power_source") is None and not fields.get("power_unavailable_reason"):
            fields["power_unavailable_reason"] = "no power measurement in this job"
    fields["started_at"] = started
    fields["duration_s"] = round(duration_s, 3)
    return JobRecord.from_dict(fields)
