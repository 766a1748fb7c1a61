"""Plan a run: checkpoint × device × backend × precision × calibration jobs, refusals decided up front."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import backends
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
    return devices


#: Whether a backend can run, asked where the jobs will run: name -> (refusal or None, Capabilities or None).
BackendProbe = Callable[[str], "tuple[str | None, Any]"]


def plan_jobs(options: BenchmarkOptions, devices: Sequence[DeviceProfile], checkpoints: Sequence[Checkpoint],
              probe: BackendProbe | None = None) -> list[PlannedJob]:
    """One PlannedJob per (device, checkpoint, backend, precision, calibration); refusals decided here.

    ``probe`` answers whether a backend can run (default: on this host); a fleet asks the device's worker.
    """
    probe = probe or _backend_refusal
    jobs: list[PlannedJob] = []
    for device in devices:
        present = device_present(device)
        names = [b for b in device.backends if options.backends is None or b in options.backends]
        for ckpt in checkpoints:
            for backend_name in names:
                precisions = [p for p in device.precisions if options.precisions is None or p in options.precisions]
                refusal, caps = probe(backend_name)
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
