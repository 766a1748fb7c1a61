"""Plan a run: checkpoint × device × backend × precision × calibration jobs, refusals decided up front."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

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
                        job_refusal = refusal or model_refusal(ckpt, options, backend_name, precision)
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


def model_refusal(ckpt: Checkpoint, options: BenchmarkOptions, backend: str | None = None,
                  precision: str | None = None) -> str | None:
    """Why this checkpoint cannot be benchmarked as asked, or None.

    - a .tflite checkpoint anywhere but LiteRT FP32 (it runs as it is; the harness converts ONNX only);
    - a timing batch larger than the batch the graph fixes;
    - several outputs while only the first can be scored (until scoring by role lands): refused rather than
      scoring output 0 as if it were the model's answer.
    """
    if ckpt.format == "tflite" and backend is not None and (backend != "litert" or precision != "fp32"):
        return (f"{ckpt.name} is a .tflite checkpoint: it runs as it is on litert fp32 only "
                f"(not {backend} {precision}); pass an ONNX export for other backends and precisions")
    fixed = ckpt.fixed_batch
    if fixed is not None and options.batch > fixed:
        return (f"{ckpt.name} fixes its batch at {fixed} in the graph; --batch {options.batch} cannot be fed "
                f"(use --batch {fixed} or less, or export the model with a dynamic batch axis)")
    if len(ckpt.outputs) > 1 and not multi_output_scoring_available():
        return (f"{ckpt.name} has {len(ckpt.outputs)} outputs ({', '.join(ckpt.output_names)}) and this version "
                "scores only single-output models; refusing rather than scoring the first output alone")
    return None


def multi_output_scoring_available() -> bool:
    """True once harness.scoring provides score_outputs (every output scored by its role)."""
    try:
        from harness.scoring import score_outputs  # noqa: F401
    except ImportError:
        return False
    return True


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
