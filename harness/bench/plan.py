"""Plan a run: checkpoint × device × backend × precision × calibration jobs, refusals decided up front."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import backends
from backends.base import CompileConfig
from backends.options import check_option_keys, options_for
from devices import DeviceProfile, load_device
from devices.numerics import is_integer_precision
from harness.bench.jobs import make_job_id
from harness.bench.options import BenchmarkOptions
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


def validate_names(options: BenchmarkOptions) -> list[DeviceProfile]:
    """Load the devices and check backend names before anything runs (errors list the valid choices)."""
    from harness.bench.worker import import_plugins

    import_plugins(options.plugin_modules)
    devices = [load_device(d) for d in options.devices]
    known = sorted(set(backends.backend_names()).union(*(d.backends for d in devices)))
    for b in options.backends or ():
        if b not in known:
            raise KeyError(f"unknown backend {b!r}; valid: {', '.join(known)}")
    check_backend_options(options, devices)
    return devices


def plan_jobs(options: BenchmarkOptions, devices: Sequence[DeviceProfile], checkpoints: Sequence[Checkpoint]
              ) -> list[PlannedJob]:
    jobs: list[PlannedJob] = []
    for device in devices:
        present = device_present(device)
        names = [b for b in device.backends if options.backends is None or b in options.backends]
        for ckpt in checkpoints:
            for backend_name in names:
                precisions = [p for p in device.precisions if options.precisions is None or p in options.precisions]
                refusal, backend = _backend_refusal(backend_name)
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
                        if job_refusal is None and backend is not None:
                            # The one refusal rule: the same function check_request applies at compile time.
                            job_refusal = backend.refusal(CompileConfig(
                                precision=precision, calibration=calib, per_channel=per_channel,
                                activation_signed=signed, target=options.target,
                                options=options_for(backend, options.backend_options)))
                        jobs.append(PlannedJob(
                            device, ckpt, backend_name, precision, calib, per_channel, signed,
                            make_job_id(ckpt.name, device.name, backend_name, precision, calib, per_channel),
                            job_refusal, host_substitute=not present))
    return jobs


def _backend_refusal(name: str) -> tuple[str | None, Any]:
    """(why the backend cannot run any job here, None) or (None, the adapter to ask per job)."""
    try:
        cls = backends.get_backend(name)
    except KeyError:
        return f"backend {name!r} is not registered in this installation (valid: {', '.join(backends.backend_names())})", None
    avail = cls.availability()
    if not avail.available:
        return f"{name} is unavailable: {avail.explain()}", None
    try:
        backend = cls()
        backend.capabilities()
        return None, backend
    except Exception as exc:  # a broken SDK must not stop planning
        return f"{name} capabilities probe failed: {type(exc).__name__}: {exc}", None


def check_backend_options(options: BenchmarkOptions, devices: Sequence[DeviceProfile]) -> None:
    """Refuse, before anything runs, a --backend-option no planned backend knows (naming each one's options)
    or a value a backend that knows it refuses (OptionError, a ValueError)."""
    if not options.backend_options:
        return
    names = {b for d in devices for b in d.backends if options.backends is None or b in options.backends}
    classes = {}
    for name in sorted(names):
        try:
            classes[name] = backends.get_backend(name)
        except KeyError:
            continue  # planned as an unsupported row with its own reason
    check_option_keys(classes, options.backend_options)


def resolve_checkpoints(paths: Sequence[str]) -> list[Checkpoint]:
    resolved = [Path(p) for p in paths] if paths else default_checkpoint_paths()
    return [load_checkpoint(p) for p in resolved]
