"""Plan and run jobs: checkpoint × device × backend × precision, each in its own child process."""
from __future__ import annotations

import datetime as _dt
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import backends
from backends.base import is_integer_precision, validate_precision
from devices import DeviceProfile, load_device
from harness.data import datasets
from harness.host import hostinfo
from harness.model.checkpoint import Checkpoint, check_feedable, default_checkpoint_paths, load_checkpoint
from backends.environments import interpreter_for
from harness.bench.jobs import JobSpec, make_job_id
from harness.store.records import JobRecord
from harness.store.writer import RunStore, new_run_id

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK = {"warmup": 5, "iters": 50, "runs": 1, "eval_samples": 500}
#: Backends that execute on the host CPU when the profiled device is absent.
HOST_CPU_BACKENDS = ("onnxruntime", "openvino", "tvm", "litert")


@dataclass(frozen=True)
class BenchmarkOptions:
    devices: tuple[str, ...] = ("cpu",)
    checkpoints: tuple[str, ...] = ()
    backends: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    calibrations: tuple[str, ...] | None = None
    per_channel: bool | None = None
    warmup: int = 20
    iters: int = 200
    runs: int = 5
    batch: int = 1
    calib_samples: int = 256
    eval_samples: int | None = None
    calib_seed: int = 0
    quick: bool = False
    fidelity_only: bool = False
    results_dir: Path = Path("results")
    run_id: str | None = None
    resume: bool = False
    timeout_s: float = 900.0
    #: Seconds the validation pass may take before it scores only the images done so far (None: no limit).
    validate_budget_s: float | None = 60.0
    threads: int | None = None
    cpu_affinity: tuple[int, ...] | None = None
    power_period_ms: float = 10.0
    power_estimate: bool = False
    power_source_options: tuple[tuple[str, str, Any], ...] = ()   # (source, key, value)
    prefer_full_dataset: bool = True
    #: Modules imported (here and in each worker) to register backends outside the entry points.
    plugin_modules: tuple[str, ...] = ()
    #: Backend-specific compile options (key, value), e.g. ("target", "dla0"), ("tuning_trials", 64).
    backend_options: tuple[tuple[str, Any], ...] = ()
    #: Backend target, e.g. an OpenVINO plugin ("GPU", "NPU"), "dla0" for TensorRT, an adb device id for RKNN.
    target: str | None = None
    command: str = ""

    def __post_init__(self) -> None:
        if not self.devices:
            raise ValueError("at least one device is needed")
        for p in self.precisions or ():
            validate_precision(p)
        if self.warmup < 0 or self.iters < 1 or self.runs < 1 or self.batch < 1:
            raise ValueError("--warmup must be >= 0 and --iters, --runs, --batch >= 1")
        if self.calib_samples < 1:
            raise ValueError("--calib-samples must be >= 1")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise ValueError("--eval-samples must be >= 1")
        if self.timeout_s <= 0:
            raise ValueError("--timeout must be > 0")

    def loop(self) -> dict[str, int]:
        if self.quick:
            return {"warmup": QUICK["warmup"], "iters": QUICK["iters"], "runs": QUICK["runs"]}
        return {"warmup": self.warmup, "iters": self.iters, "runs": self.runs}


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    records: list[JobRecord] = field(default_factory=list)
    eval_source: str = ""


@dataclass(frozen=True)
class PlannedJob:
    device: DeviceProfile
    checkpoint: Checkpoint
    backend: str
    precision: str
    calibration: str | None
    per_channel: bool
    activation_signed: bool
    job_id: str
    refusal: str | None = None          # set when the job is refused at planning time
    host_substitute: bool = False


def validate_names(options: BenchmarkOptions) -> list[DeviceProfile]:
    """Load the devices and check backend names before anything runs (errors list the valid choices)."""
    from harness.bench.worker import import_plugins

    import_plugins(options.plugin_modules)
    devices = [load_device(d) for d in options.devices]
    known = sorted(set(backends.backend_names()).union(*(d.backends for d in devices)))
    for b in options.backends or ():
        if b not in known:
            raise KeyError(f"unknown backend {b!r}; valid: {', '.join(known)}")
    return devices


def device_present(device: DeviceProfile) -> bool:
    """Whether this host is the profiled device (only then are timings device timings)."""
    if device.form_factor == "host_cpu":
        return True
    if device.name.startswith("jetson"):
        return Path("/etc/nv_tegra_release").exists()
    if device.rknn_platform:
        try:
            return device.rknn_platform in Path("/proc/device-tree/compatible").read_bytes().decode(errors="ignore")
        except OSError:
            return False
    if device.form_factor == "desktop_gpu":
        return Path("/proc/driver/nvidia/version").exists() and not Path("/etc/nv_tegra_release").exists()
    return False


def plan_jobs(options: BenchmarkOptions, devices: Sequence[DeviceProfile], checkpoints: Sequence[Checkpoint]
              ) -> list[PlannedJob]:
    jobs: list[PlannedJob] = []
    for device in devices:
        present = device_present(device)
        names = [b for b in device.backends if options.backends is None or b in options.backends]
        for ckpt in checkpoints:
            for backend_name in names:
                precisions = [p for p in device.precisions if options.precisions is None or p in options.precisions]
                refusal, caps = _backend_refusal(backend_name)
                for precision in precisions:
                    policy = next((q for q in device.quant_policies if q.name == precision), None)
                    per_channel = options.per_channel if options.per_channel is not None else (
                        policy.per_channel if policy else True)
                    signed = bool(policy and policy.activation_signed)
                    calibs: Sequence[str | None] = [None]
                    if is_integer_precision(precision) and precision != "int8-dynamic" and options.calibrations:
                        calibs = list(options.calibrations)
                    for calib in calibs:
                        job_refusal = refusal
                        if job_refusal is None and caps is not None and precision not in caps.precisions:
                            job_refusal = (f"{backend_name} does not support {precision} "
                                           f"(it supports: {', '.join(caps.precisions)})")
                        if job_refusal is None and calib and caps is not None and caps.calibration_methods \
                                and calib not in caps.calibration_methods:
                            job_refusal = (f"{backend_name} has no {calib!r} calibration "
                                           f"(it has: {', '.join(caps.calibration_methods)})")
                        jobs.append(PlannedJob(
                            device, ckpt, backend_name, precision, calib, per_channel, signed,
                            make_job_id(ckpt.name, device.name, backend_name, precision, calib, per_channel),
                            job_refusal, host_substitute=not present))
    return jobs


def _backend_refusal(name: str) -> tuple[str | None, Any]:
    try:
        cls = backends.get_backend(name)
    except KeyError:
        return f"backend {name!r} is not registered in this installation (valid: {', '.join(backends.backend_names())})", None
    avail = cls.availability()
    if not avail.available:
        return f"{name} is unavailable: {avail.explain()}", None
    try:
        return None, cls().capabilities()
    except Exception as exc:  # a broken SDK must not stop planning
        return f"{name} capabilities probe failed: {type(exc).__name__}: {exc}", None


def resolve_checkpoints(paths: Sequence[str]) -> list[Checkpoint]:
    resolved = [Path(p) for p in paths] if paths else default_checkpoint_paths()
    return [load_checkpoint(p) for p in resolved]


def prepare_data(options: BenchmarkOptions, store: RunStore) -> tuple[Path, str, tuple[int, ...]]:
    eval_split, calib_split = datasets.default_eval_and_calibration(options.prefer_full_dataset)
    n_eval = QUICK["eval_samples"] if options.quick and options.eval_samples is None else options.eval_samples
    eval_split = eval_split.head(n_eval)
    calib = datasets.calibration_subset(calib_split, options.calib_samples, seed=options.calib_seed)
    path = store.work_dir / "data.npz"
    np.savez(path, eval_images=eval_split.images, eval_labels=eval_split.labels, calib_images=calib)
    source = f"{eval_split.source}, {len(eval_split)} images; calibration: {len(calib)} images from {calib_split.source}"
    return path, source, tuple(eval_split.images.shape[1:])


def _base_fields(run_id: str, job: PlannedJob, options: BenchmarkOptions, loop: dict[str, int]) -> dict[str, Any]:
    return {
        "run_id": run_id, "job_id": job.job_id, "device": job.device.name, "backend": job.backend,
        "precision": job.precision, "checkpoint": job.checkpoint.name, "checkpoint_sha256": job.checkpoint.sha256,
        "calibration_method": job.calibration, "per_channel": job.per_channel if is_integer_precision(job.precision) else None,
        "batch_size": options.batch, "warmup_iters": loop["warmup"], "timed_iters": loop["iters"], "runs": loop["runs"],
        "quick": options.quick,
    }


def _worker_command(backend: str) -> list[str]:
    return [interpreter_for(backend) or sys.executable, "-m", "harness.bench.worker"]


def execute_spec(spec: JobSpec, timeout_s: float, log_path: Path) -> dict[str, Any]:
    """Run the worker in a child process; turn a crash or hang into a result dict."""
    job_file = Path(spec.result_path).with_suffix(".job.json")
    spec.write(job_file)
    Path(spec.stage_path).write_text("compile")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_worker_command(spec.backend) + [str(job_file)], stdout=log, stderr=subprocess.STDOUT,
                                cwd=str(REPO_ROOT), env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stage = Path(spec.stage_path).read_text().strip() or "compile"
            return {"status": "timeout", "failed_stage": stage,
                    "error_message": f"job exceeded its {timeout_s:.0f} s timeout during {stage}; raise it with --timeout"}
        except KeyboardInterrupt:
            _kill_group(proc)
            raise
    result_path = Path(spec.result_path)
    if result_path.exists():
        import json

        return json.loads(result_path.read_text())
    stage = Path(spec.stage_path).read_text().strip() or "compile"
    tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
    why = f"killed by signal {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc} without a result"
    return {"status": "crashed", "failed_stage": stage, "error_message": f"worker {why} during {stage}. Log tail: {tail}"}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _spec_for(job: PlannedJob, mode: str, run_id: str, options: BenchmarkOptions, store: RunStore, data_path: Path,
              reference_path: Path, loop: dict[str, int]) -> JobSpec:
    tag = job.job_id if mode == "measure" else f"reference__{job.checkpoint.name}"
    device_ref = next((d for d in options.devices if d == job.device.name or Path(d).stem == job.device.name),
                      job.device.name)
    work = store.work_dir
    return JobSpec(
        run_id=run_id, job_id=job.job_id, mode=mode, device=device_ref, backend=job.backend,
        precision=job.precision, checkpoint=job.checkpoint.name, checkpoint_path=str(job.checkpoint.path),
        calibration=job.calibration, per_channel=job.per_channel, activation_signed=job.activation_signed,
        data_path=str(data_path), reference_path=str(reference_path), result_path=str(work / f"{tag}.result.json"),
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
                   eval_source: str, run_id: str) -> tuple[dict[str, Any], list[str]]:
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
        "eval_source": eval_source,
        "warnings": warnings,
    }
    return manifest, warnings


ProgressFn = Callable[[str, int, int], None]


def run_benchmark(options: BenchmarkOptions, progress: ProgressFn | None = None,
                  warn: Callable[[str], None] | None = None) -> RunResult:
    """Run every planned job; records are written as they finish, so an interruption loses nothing."""
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    devices = validate_names(options)
    checkpoints = resolve_checkpoints(options.checkpoints)
    run_id = options.run_id or new_run_id()
    store = RunStore(options.results_dir, run_id, resume=options.resume)
    data_path, eval_source, image_shape = prepare_data(options, store)
    for ckpt in checkpoints:
        check_feedable(ckpt, image_shape, eval_source)
    manifest, warnings = build_manifest(options, devices, checkpoints, eval_source, run_id)
    store.write_manifest(manifest)
    for w in warnings:
        warn(w)
    loop = options.loop()
    jobs = plan_jobs(options, devices, checkpoints)
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
                ref = _make_reference(job, run_id, options, store, data_path, loop)
                references[job.checkpoint.name] = ref
            if isinstance(ref, str):
                outcome = {"status": "failed", "failed_stage": "validate",
                           "error_message": f"the FP32 ONNX Runtime reference could not be computed: {ref}"}
            else:
                busy, load = hostinfo.host_busy()
                if busy and not options.fidelity_only:  # no timing to inflate otherwise
                    warn(f"other processes are using the CPUs (1-min load {load:.1f} on {os.cpu_count()} CPUs): "
                         f"latency of {job.job_id} may be inflated")
                spec = _spec_for(job, "measure", run_id, options, store, data_path, ref, loop)
                outcome = execute_spec(spec, options.timeout_s, store.work_dir / f"{job.job_id}.log")
                outcome.update(host_busy=busy, load_avg_1m=load)
        record = _to_record(base, outcome, job, eval_source, started, time.perf_counter() - t0)
        store.append(record)
        result.records.append(record)
    if progress:
        progress("done", len(jobs), len(jobs))
    return result


def _make_reference(job: PlannedJob, run_id: str, options: BenchmarkOptions, store: RunStore, data_path: Path,
                    loop: dict[str, int]) -> Path | str:
    ref_path = store.work_dir / f"reference__{job.checkpoint.name}.npy"
    if ref_path.exists():
        return ref_path
    ref_job = PlannedJob(job.device, job.checkpoint, "onnxruntime", "fp32", None, True, False, job.job_id)
    spec = _spec_for(ref_job, "reference", run_id, options, store, data_path, ref_path, loop)
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
