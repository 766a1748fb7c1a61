"""Plan a run: checkpoint × device × backend × precision × calibration jobs, refusals decided up front."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import backends
from backends.base import CompileConfig
from backends.options import check_option_keys, options_for
from devices import DeviceProfile, load_device
from devices.choices import unknown_name
from devices.numerics import is_integer_precision
from harness.bench.jobs import make_job_id
from harness.bench.options import BenchmarkOptions
from harness.bench.probe import ProbeResult, probe_backends
from harness.host.presence import device_present
from harness.model.checkpoint import Checkpoint, default_checkpoint_paths, load_checkpoint


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


@dataclass(frozen=True)
class LeftOut:
    """A job the default run does not plan, why, and the flags that plan it (shown under the summary and kept in
    the manifest's ``left_out``): never silently dropped."""

    job_id: str
    checkpoint: str
    device: str
    backend: str
    precision: str
    reason: str
    include_with: str

    def to_dict(self) -> dict[str, str]:
        """Every field by name (the manifest's ``left_out`` entries)."""
        return dict(self.__dict__)


#: Options that make a TVM build tuned (a job asked with them is not "untuned", so it stays in the plan).
TVM_TUNING_OPTIONS = ("tuning_trials", "tuning_trials_per_task")

UNTUNED_TVM_INT8 = ("untuned TVM INT8 would time naive loops, not what a TVM user ships: TVM imports the QDQ "
                    "graph's quantize/dequantize in float, and the bundled tuning database covers TVM FP32 only "
                    "(on the bundled ResNet-20 ~60 ms per image against under 1 ms for tuned FP32: about a minute "
                    "per job)")
INCLUDE_TVM_INT8 = ("--all-jobs (or --backends tvm --precisions int8); tune it with --backend-option "
                    "tuning_trials=N (a database you tuned is then applied)")


def is_default_run(options: BenchmarkOptions) -> bool:
    """No backend or precision named, --all-jobs not given, and something to time (a --fidelity-only run is about
    the outputs, which untuned code computes as well as tuned): the run the default policy applies to."""
    return (options.backends is None and options.precisions is None and not options.all_jobs
            and not options.fidelity_only)


def leave_out_of_default_run(jobs: Sequence[PlannedJob], options: BenchmarkOptions
                             ) -> tuple[list[PlannedJob], list[LeftOut]]:
    """(jobs to run, jobs left out with the reason and how to include them) under the default run's policy.

    The default run (``python -m harness run`` with no --backends/--precisions) leaves out untuned TVM INT8:
    it measures naive loops for about a minute per job and tells a user nothing about TVM as it is shipped. A
    run that names backends or precisions, passes --all-jobs, or asks TVM to tune plans every job. Refused
    jobs stay in (their ``unsupported`` row costs nothing and says why).
    """
    if not is_default_run(options) or any(k in TVM_TUNING_OPTIONS for k, _ in options.backend_options):
        return list(jobs), []
    kept: list[PlannedJob] = []
    left: list[LeftOut] = []
    for job in jobs:
        if job.refusal is None and job.backend == "tvm" and is_integer_precision(job.precision):
            left.append(LeftOut(job.job_id, job.checkpoint.name, job.device.name, job.backend, job.precision,
                                UNTUNED_TVM_INT8, INCLUDE_TVM_INT8))
        else:
            kept.append(job)
    return kept, left


class PluginError(ValueError):
    """A --plugin module could not be imported; the message names it and why."""


def validate_names(options: BenchmarkOptions) -> list[DeviceProfile]:
    """Load the devices and check backend names before anything runs (errors list the valid choices)."""
    from harness.bench.worker import import_plugins

    for module in options.plugin_modules:
        try:
            import_plugins((module,))
        except ImportError as exc:
            raise PluginError(f"--plugin {module}: cannot import it ({exc}); give an importable module name "
                              "(package.module, found on PYTHONPATH or in the current folder)") from None
    devices = [load_device(d) for d in options.devices]
    known = sorted(set(backends.backend_names()).union(*(d.backends for d in devices)))
    for b in options.backends or ():
        if b not in known:
            raise KeyError(unknown_name("backend", b, known))
    check_backend_options(options, devices)
    return devices


def check_backend_options(options: BenchmarkOptions, devices: Sequence[DeviceProfile]) -> None:
    """Refuse, before anything runs, a --backend-option no planned backend knows (naming each one's options)
    or a value a backend that knows it refuses (OptionError, a ValueError)."""
    if not options.backend_options:
        return
    names = set(options.backends or ()) | {b for d in devices for b in d.backends if options.backends is None}
    classes = {}
    for name in sorted(names):
        try:
            classes[name] = backends.get_backend(name)
        except KeyError:
            continue  # planned as an unsupported row with its own reason
    check_option_keys(classes, options.backend_options)


#: Probes backends where the jobs will run: (names, plugin modules) -> name -> ProbeResult.
BackendProbe = Callable[[Sequence[str], Sequence[str]], "dict[str, ProbeResult]"]


def plan_jobs(options: BenchmarkOptions, devices: Sequence[DeviceProfile], checkpoints: Sequence[Checkpoint],
              probe: BackendProbe | None = None) -> list[PlannedJob]:
    """Every job of the run, refusals included: a backend or precision asked for that the device does not offer
    becomes refused jobs with the reason (never silently dropped); probes run in child processes.

    ``probe`` asks whether backends can run (default: here, ``probe_backends``); a fleet asks the device's worker.
    """
    wanted = set()
    for device in devices:
        wanted.update(b for b in device.backends if options.backends is None or b in options.backends)
    probes = (probe or probe_backends)(sorted(wanted), options.plugin_modules)
    jobs: list[PlannedJob] = []
    for device in devices:
        present = device_present(device)
        names = [b for b in device.backends if options.backends is None or b in options.backends]
        names += [b for b in options.backends or () if b not in device.backends]
        precisions = [p for p in device.precisions if options.precisions is None or p in options.precisions]
        precisions += [p for p in options.precisions or () if p not in device.precisions]
        for ckpt in checkpoints:
            for backend_name in names:
                if backend_name in device.backends:
                    probe = probes[backend_name]
                    refusal, caps = probe.refusal, probe.capabilities
                else:
                    refusal, caps = (f"device {device.name} does not offer backend {backend_name} (its backends: "
                                     f"{', '.join(device.backends)})"), None
                for precision in precisions:
                    policy = next((q for q in device.quant_policies if q.name == precision), None)
                    per_channel = options.per_channel if options.per_channel is not None else (
                        policy.per_channel if policy else True)
                    signed = bool(policy and policy.activation_signed)
                    calibs: Sequence[str | None] = [None]
                    if is_integer_precision(precision) and precision != "int8-dynamic" and options.calibrations:
                        calibs = list(options.calibrations)
                    for calib in calibs:
                        job_refusal = refusal or model_refusal(ckpt, options, backend_name, precision)
                        if job_refusal is None and precision not in device.precisions:
                            job_refusal = (f"device {device.name} does not offer {precision} (its precisions: "
                                           f"{', '.join(device.precisions)})")
                        if job_refusal is None and caps is not None:
                            # The one refusal rule: the same function check_request applies at compile time.
                            cls = backends.get_backend(backend_name)
                            job_refusal = cls.refusal_for(caps, CompileConfig(
                                precision=precision, calibration=calib, per_channel=per_channel,
                                activation_signed=signed, target=options.target,
                                options=options_for(cls, options.backend_options)))
                        jobs.append(PlannedJob(
                            device, ckpt, backend_name, precision, calib, per_channel, signed,
                            make_job_id(ckpt.name, device.name, backend_name, precision, calib, per_channel),
                            job_refusal, host_substitute=not present))
    return jobs


def model_refusal(ckpt: Checkpoint, options: BenchmarkOptions, backend: str | None = None,
                  precision: str | None = None) -> str | None:
    """Why this checkpoint cannot be benchmarked as asked, or None.

    - a .tflite checkpoint anywhere but LiteRT FP32 (it runs as it is; the harness converts ONNX only);
    - a timing batch larger than the batch the graph fixes.
    """
    if ckpt.format == "tflite" and backend is not None and (backend != "litert" or precision != "fp32"):
        return (f"{ckpt.name} is a .tflite checkpoint: it runs as it is on litert fp32 only "
                f"(not {backend} {precision}); pass an ONNX export for other backends and precisions")
    fixed = ckpt.fixed_batch
    if fixed is not None and options.batch > fixed:
        return (f"{ckpt.name} fixes its batch at {fixed} in the graph; --batch {options.batch} cannot be fed "
                f"(use --batch {fixed} or less, or export the model with a dynamic batch axis)")
    return None


def resolve_checkpoints(paths: Sequence[str]) -> list[Checkpoint]:
    resolved = [Path(p) for p in paths] if paths else default_checkpoint_paths()
    return [load_checkpoint(p) for p in resolved]
