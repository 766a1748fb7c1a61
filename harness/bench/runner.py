"""Run a benchmark: plan, prepare data and the FP32 reference, launch every job, append every record.

The route of one job: BenchmarkOptions (options.py) -> PlannedJob (plan.py) -> JobSpec (jobs.py, JSON to the
worker process) -> JobRecord (harness.store.records).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from devices import DeviceProfile
from devices.numerics import is_integer_precision, takes_calibration
from harness.data.loaders import Dataset, save_job_data
from harness.data.prepare import describe as describe_data, prepare_datasets
from harness.host import hostinfo
from harness.bench.jobs import JobSpec
from harness.bench.launch import execute_spec
from harness.bench.options import BenchmarkOptions
from harness.bench.plan import PlannedJob, plan_jobs, resolve_checkpoints, validate_names
from harness.host.presence import device_present
from harness.model.card import effective_card
from harness.model.checkpoint import Checkpoint, check_feedable
from harness.store.records import JobRecord
from harness.store.writer import RunStore, new_run_id

#: Backends that execute on the host CPU when the profiled device is absent.
HOST_CPU_BACKENDS = ("onnxruntime", "openvino", "tvm", "litert")


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    records: list[JobRecord] = field(default_factory=list)
    eval_source: str = ""


def prepare_data(options: BenchmarkOptions, store: RunStore, checkpoint: Checkpoint, needs_calibration: bool = True
                 ) -> tuple[Path, str, Dataset]:
    """Evaluation (and calibration) inputs of one checkpoint, written to the worker's data file.

    Returns (data file, the eval_source line of the records, the evaluation set).
    """
    evaluation, calib = prepare_datasets(options.data_request(), checkpoint, checkpoint.card, needs_calibration)
    path = store.work_dir / f"data__{checkpoint.name}.npz"
    save_job_data(path, evaluation, calib)
    return path, describe_data(evaluation, calib), evaluation


def attach_card(checkpoint: Checkpoint, options: BenchmarkOptions) -> Checkpoint:
    """The checkpoint with its effective model card (--model-card, else <stem>.card.toml beside it, else inferred)."""
    return dataclasses.replace(checkpoint, card=effective_card(checkpoint, options.model_card_path))


def _base_fields(run_id: str, job: PlannedJob, options: BenchmarkOptions, loop: dict[str, int]) -> dict[str, Any]:
    return {
        "run_id": run_id, "job_id": job.job_id, "device": job.device.name, "backend": job.backend,
        "precision": job.precision, "checkpoint": job.checkpoint.name, "checkpoint_sha256": job.checkpoint.sha256,
        "calibration_method": job.calibration, "per_channel": job.per_channel if is_integer_precision(job.precision) else None,
        "batch_size": options.batch, "warmup_iters": loop["warmup"], "timed_iters": loop["iters"], "runs": loop["runs"],
        "quick": options.quick,
    }


def _spec_for(job: PlannedJob, mode: str, run_id: str, options: BenchmarkOptions, store: RunStore,
              data_paths: dict[str, Path], reference_path: Path, loop: dict[str, int]) -> JobSpec:
    tag = job.job_id if mode == "measure" else f"reference__{job.checkpoint.name}"
    device_ref = next((d for d in options.devices if d == job.device.name or Path(d).stem == job.device.name),
                      job.device.name)
    work = store.work_dir
    return JobSpec(
        run_id=run_id, job_id=job.job_id, mode=mode, device=device_ref, backend=job.backend,
        precision=job.precision, checkpoint=job.checkpoint.name, checkpoint_path=str(job.checkpoint.path),
        calibration=job.calibration, per_channel=job.per_channel, activation_signed=job.activation_signed,
        data_path=str(data_paths[job.checkpoint.name]), reference_path=str(reference_path), result_path=str(work / f"{tag}.result.json"),
        stage_path=str(work / f"{tag}.stage"), latency_path=str(store.run_dir / "latencies" / f"{job.job_id}.npy"),
        workdir=str(store.results_dir / ".cache" / "artifacts"), warmup=loop["warmup"], iters=loop["iters"],
        runs=loop["runs"], batch=options.batch, validate_batch=1,
        validate_budget_s=options.validate_budget_s if mode == "measure" else None, fidelity_only=options.fidelity_only,
        threads=options.threads, cpu_affinity=options.cpu_affinity, power_period_ms=options.power_period_ms, power_estimate=options.power_estimate,
        power_source_options=_source_options(options.power_source_options), host_substitute=job.host_substitute,
        calibration_table=str(job.checkpoint.calibration_table) if job.checkpoint.calibration_table else None,
        qdq_path=str(job.checkpoint.qdq_path) if job.checkpoint.qdq_path else None,
        plugin_modules=options.plugin_modules, options=tuple(options.backend_options),
        target=options.target,
    )


def _source_options(triples: Sequence[tuple[str, str, Any]]) -> dict[str, dict[str, Any]] | None:
    out: dict[str, dict[str, Any]] = {}
    for source, key, value in triples:
        out.setdefault(source, {})[key] = list(value) if isinstance(value, tuple) else value
    return out or None


def build_manifest(options: BenchmarkOptions, devices: Sequence[DeviceProfile], checkpoints: Sequence[Checkpoint],
                   eval_source: str, run_id: str, data_notes: dict[str, list[str]] | None = None
                   ) -> tuple[dict[str, Any], list[str]]:
    warnings: list[str] = []
    platform: dict[str, Any] = {}
    for device in devices:
        try:
            from harness.host.platform_facts import platform_facts
        except ImportError:
            break
        try:
            facts, warns = platform_facts(device)
        except Exception as exc:  # facts are nice to have; never fatal
            facts, warns = {"error": f"{type(exc).__name__}: {exc}"}, []
        platform[device.name] = facts
        warnings.extend(warns)
    manifest = {
        "run_id": run_id,
        "command": options.command or " ".join(sys.argv),
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": hostinfo.host_facts(),
        "packages": hostinfo.package_versions(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items()},
        "devices": {d.name: d.to_dict() for d in devices},
        "device_present": {d.name: device_present(d) for d in devices},
        "platform": platform,
        "checkpoints": {c.name: {"path": str(c.path), "sha256": c.sha256,
                                 "calibration_table": str(c.calibration_table) if c.calibration_table else None}
                        for c in checkpoints},
        # the effective model cards: pass one back with --model-card to repeat the run exactly
        "model_cards": {c.name: c.card.to_dict() for c in checkpoints if c.card is not None},
        "eval_source": eval_source,
        "data": {"path": str(options.data_path) if options.data_path else None,
                 "calib_path": str(options.calib_data_path) if options.calib_data_path else None,
                 "notes": data_notes or {}},
        "warnings": warnings,
    }
    return manifest, warnings


ProgressFn = Callable[[str, int, int], None]


def run_benchmark(options: BenchmarkOptions, progress: ProgressFn | None = None,
                  warn: Callable[[str], None] | None = None, info: Callable[[str], None] | None = None) -> RunResult:
    """Run every planned job; records are written as they finish, so an interruption loses nothing."""
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    devices = validate_names(options)
    checkpoints = resolve_checkpoints(options.checkpoints)
    run_id = options.run_id or new_run_id()
    store = RunStore(options.results_dir, run_id, resume=options.resume)
    checkpoints = [attach_card(c, options) for c in checkpoints]
    info = info or (lambda msg: print(msg, file=sys.stderr))
    for ckpt in checkpoints:
        if ckpt.card.inferred:
            info(f"model card of {ckpt.name} ({ckpt.card.source}), assumed:\n  " + "\n  ".join(ckpt.card.inferred))
    jobs = plan_jobs(options, devices, checkpoints)
    data_paths: dict[str, Path] = {}
    sources: dict[str, str] = {}
    data_notes: dict[str, list[str]] = {}
    for ckpt in checkpoints:
        needs = any(j.checkpoint.name == ckpt.name and j.refusal is None and takes_calibration(j.precision)
                    for j in jobs) or not options.data_path
        data_paths[ckpt.name], sources[ckpt.name], evaluation = prepare_data(options, store, ckpt, needs)
        data_notes[ckpt.name] = list(evaluation.notes)
        if len(evaluation.inputs) == 1:
            check_feedable(ckpt, tuple(evaluation.first.shape[1:]), sources[ckpt.name])
    eval_source = "; ".join(dict.fromkeys(sources.values()))
    manifest, warnings = build_manifest(options, devices, checkpoints, eval_source, run_id, data_notes)
    store.write_manifest(manifest)
    for w in warnings:
        warn(w)
    loop = options.loop()
    done = store.finished_job_ids()
    result = RunResult(run_id, store.run_dir, eval_source=eval_source)
    references: dict[str, Path | str] = {}
    for index, job in enumerate(jobs):
        if job.job_id in done:
            continue
        if progress:
            progress(job.job_id, index, len(jobs))
        base = _base_fields(run_id, job, options, loop)
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        if job.refusal is not None:
            outcome: dict[str, Any] = {"status": "unsupported", "failed_stage": "plan", "error_message": job.refusal}
        else:
            ref = references.get(job.checkpoint.name)
            if ref is None:
                ref = _make_reference(job, run_id, options, store, data_paths, loop)
                references[job.checkpoint.name] = ref
            if isinstance(ref, str):
                outcome = {"status": "failed", "failed_stage": "validate",
                           "error_message": f"the FP32 ONNX Runtime reference could not be computed: {ref}"}
            else:
                busy, load = hostinfo.host_busy()
                if busy and not options.fidelity_only:  # no timing to inflate otherwise
                    warn(f"other processes are using the CPUs (1-min load {load:.1f} on {os.cpu_count()} CPUs): "
                         f"latency of {job.job_id} may be inflated")
                spec = _spec_for(job, "measure", run_id, options, store, data_paths, ref, loop)
                outcome = execute_spec(spec, options.timeout_s, store.work_dir / f"{job.job_id}.log")
                outcome.update(host_busy=busy, load_avg_1m=load)
        record = _to_record(base, outcome, job, sources[job.checkpoint.name], started, time.perf_counter() - t0)
        store.append(record)
        result.records.append(record)
    if progress:
        progress("done", len(jobs), len(jobs))
    return result


def _make_reference(job: PlannedJob, run_id: str, options: BenchmarkOptions, store: RunStore,
                    data_paths: dict[str, Path], loop: dict[str, int]) -> Path | str:
    ref_path = store.work_dir / f"reference__{job.checkpoint.name}.npy"
    if ref_path.exists():
        return ref_path
    ref_job = PlannedJob(job.device, job.checkpoint, "onnxruntime", "fp32", None, True, False, job.job_id)
    spec = _spec_for(ref_job, "reference", run_id, options, store, data_paths, ref_path, loop)
    outcome = execute_spec(spec, options.timeout_s, store.work_dir / f"reference__{job.checkpoint.name}.log")
    if outcome.get("status") != "ok" or not ref_path.exists():
        return outcome.get("error_message") or "unknown error"
    return ref_path


def _to_record(base: dict[str, Any], outcome: dict[str, Any], job: PlannedJob, eval_source: str, started: str,
               duration_s: float) -> JobRecord:
    fields = dict(base)
    fields.update({k: v for k, v in outcome.items() if v is not None or k in ("failed_stage",)})
    status = fields.get("status", "failed")
    if status == "ok":
        fields["eval_source"] = eval_source
        if job.host_substitute and job.backend in HOST_CPU_BACKENDS:
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
