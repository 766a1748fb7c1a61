"""Run one job in this (child) process: compile, load, warm up, time, validate.

Usage: python -m harness.bench.worker JOB.json   (the runner starts it; any interpreter with the harness works)
Whatever happens, the outcome is written as JSON to the job's result_path; a crash leaves no result,
which the parent records as `crashed`.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np

import backends
from backends.cache import invalidate_path
from backends.base import CompileConfig, ModelArtifact, RuntimeConfig, UnsupportedRequest, file_sha256
from devices import load_device
from devices.numerics import takes_calibration
from harness.bench import loadgen
from harness.data.loaders import load_job_data
from harness.scoring import metrics


class StageError(Exception):
    def __init__(self, stage: str, status: str, message: str) -> None:
        super().__init__(message)
        self.stage, self.status = stage, status


def _write_stage(spec, stage: str) -> None:
    Path(spec.stage_path).write_text(stage)


def _affinity() -> tuple[int, ...] | None:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return None


def pin_and_count_threads(spec) -> int:
    """Apply the requested CPU affinity, then the thread count: explicit, else one per CPU we may use.

    The reference and every job resolve threads the same way, so FP32 against itself is bit-identical.
    """
    if spec.cpu_affinity:
        os.sched_setaffinity(0, spec.cpu_affinity)
    return spec.threads or len(_affinity() or ()) or os.cpu_count() or 1


def run_reference(spec) -> dict[str, Any]:
    """FP32 ONNX Runtime outputs on every evaluation image: what every fidelity metric compares against."""
    from backends.onnxruntime_backend import OrtSession

    images = load_job_data(spec.data_path)[0].first
    session = OrtSession(Path(spec.checkpoint_path), ["CPUExecutionProvider"], pin_and_count_threads(spec))
    try:
        outputs = loadgen.run_outputs(session, images, spec.validate_batch)
    finally:
        session.close()
    tmp = Path(spec.reference_path + ".tmp")
    with open(tmp, "wb") as f:   # atomic: a killed worker never leaves a half reference for the next attempt
        np.save(f, outputs)
    tmp.replace(spec.reference_path)
    return {"status": "ok", "reference_shape": list(outputs.shape)}


def run_measure(spec) -> dict[str, Any]:
    """Compile, load, warm up, time and validate one job; every outcome (refusal, error) becomes a dict."""
    threads = pin_and_count_threads(spec)
    out: dict[str, Any] = {"threads": threads, "cpu_affinity": _affinity()}
    stage = StageTracker(spec)
    try:
        backend, device, data = _prepare(spec, out)
        compiled = _compile(spec, backend, device, data, out)
        _model_facts(spec, data, compiled, out)
        stage.enter("load")
        try:
            session = backend.load(compiled, device, RuntimeConfig(threads))
        except Exception as exc:
            # A cached artifact that verifies but does not load (a toolchain quirk, a stale format) is rebuilt
            # once; a fresh one that fails is the job's failure.
            if not compiled.metadata.get("cached") or not invalidate_path(compiled.path, f"failed to load: {exc}"):
                raise
            stage.enter("compile")
            compiled = _compile(spec, backend, device, data, out)
            out["extra"]["cache_rebuilt_reason"] = f"the cached artifact failed to load: {type(exc).__name__}: {exc}"[:500]
            stage.enter("load")
            session = backend.load(compiled, device, RuntimeConfig(threads))
        try:
            _time(spec, session, compiled, device, data, out, stage)
            stage.enter("validate")
            validate_batch = int(compiled.metadata.get("validate_batch", spec.validate_batch))
            outputs = loadgen.run_outputs(session, data.eval_images, validate_batch, spec.validate_budget_s)
        finally:
            session.close()
        _score(spec, outputs, data, out)
        out["status"] = "ok"
        return out
    except StageError as exc:
        out.update(status=exc.status, failed_stage=exc.stage, error_message=str(exc))
    except UnsupportedRequest as exc:
        out.update(status="unsupported", failed_stage=stage.current, error_message=str(exc))
    except Exception as exc:  # any backend error becomes data, not a dead run
        out.update(status="failed", failed_stage=stage.current,
                   error_message=f"{type(exc).__name__}: {exc}".strip()[:2000],
                   traceback=traceback.format_exc(limit=8)[-4000:])
    return out


class StageTracker:
    """The stage a job is in, mirrored to the spec's stage file so the parent can name it after a timeout."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.current = "compile"
        _write_stage(spec, self.current)

    def enter(self, stage: str) -> None:
        self.current = stage
        _write_stage(self.spec, stage)


@dataclass(frozen=True)
class JobData:
    """The arrays a job is fed: evaluation images and labels, the calibration set (None when not used)."""

    eval_images: np.ndarray
    eval_labels: np.ndarray
    calibration: np.ndarray | None


def _prepare(spec, out: dict[str, Any]):
    """Plugins, device, backend (available or refused) and the job's data."""
    import_plugins(spec.plugin_modules)
    device = load_device(spec.device)
    backend = backends.create_backend(spec.backend)
    avail = backend.availability()
    out["backend_version"] = avail.version
    if not avail.available:
        raise UnsupportedRequest(avail.explain())
    out["simulated"] = bool(backend.capabilities().simulated)
    evaluation, calibration = load_job_data(spec.data_path)
    eval_images, eval_labels = evaluation.first, evaluation.labels
    calib = calibration.first if calibration is not None and len(calibration) else None
    if calib is not None and takes_calibration(spec.precision):
        out["calibration_samples"] = len(calib)
    else:
        calib = None  # float and dynamic precisions take no calibration set
    return backend, device, JobData(eval_images, eval_labels, calib)


def _compile(spec, backend, device, data: JobData, out: dict[str, Any]):
    import onnx

    calib = data.calibration
    config = CompileConfig(precision=spec.precision, calibration=spec.calibration, per_channel=spec.per_channel,
                           activation_signed=spec.activation_signed,
                           calibration_samples=len(calib) if calib is not None and len(calib) else 1,
                           options=spec.options, target=spec.target)
    graph = onnx.load(spec.checkpoint_path, load_external_data=False).graph
    in_shape = tuple(d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:])
    model = ModelArtifact(
        path=Path(spec.checkpoint_path), name=spec.checkpoint, sha256=file_sha256(spec.checkpoint_path),
        input_name=graph.input[0].name, input_shape=in_shape, output_name=graph.output[0].name,
        calibration_table=Path(spec.calibration_table) if spec.calibration_table else None,
        qdq_path=Path(spec.qdq_path) if spec.qdq_path else None,
    )
    t0 = time.perf_counter()
    compiled = backend.compile(model, device, config, calib, Path(spec.workdir))
    out["compile_s"] = time.perf_counter() - t0
    out["compile_cached"] = compiled.metadata.get("cached")
    out["calibration_method"] = compiled.metadata.get("calibration_method", spec.calibration)
    if compiled.metadata.get("activation_signed") is not None:  # the backend's own convention wins the label
        out["activation_signed"] = bool(compiled.metadata["activation_signed"])
    if compiled.metadata.get("timing_note"):
        out["timing_note"] = compiled.metadata["timing_note"]
    out["extra"] = {k: v for k, v in compiled.metadata.items() if _is_json(v)}
    out["extra"]["artifact"] = str(compiled.path)
    return compiled


def _model_facts(spec, data: JobData, compiled, out: dict[str, Any]) -> None:
    """Parameter count, MACs per batch-1 inference, model and compiled-artifact size on disk (issue 18)."""
    from harness.model.stats import model_stats, size_mb

    if hasattr(data, "inputs"):
        shapes = {name: (1, *arr.shape[1:]) for name, arr in data.inputs.items()}
    else:
        import onnx

        graph = onnx.load(spec.checkpoint_path, load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        name = next(i.name for i in graph.input if i.name not in weights)
        shapes = {name: (1, *data.eval_images.shape[1:])}
    stats = model_stats(spec.checkpoint_path, shapes)
    out["params"], out["macs_per_inference"] = stats.params, stats.macs_per_inference
    if stats.note:
        out.setdefault("extra", {})["model_stats_note"] = stats.note
    out["model_size_mb"] = size_mb(spec.checkpoint_path)
    if Path(compiled.path).exists():
        out["artifact_size_mb"] = size_mb(compiled.path)


def _time(spec, session, compiled, device, data: JobData, out: dict[str, Any], stage: StageTracker) -> None:
    """The timed loop with power sampled around it (skipped for --fidelity-only and self-timing backends)."""
    from harness.power import open_monitor

    timing = compiled.metadata.get("timing", "loop")
    if timing == "none":
        # e.g. trtexec times itself: its own figures, labelled as such by its timing_note
        out.update(compiled.metadata.get("external_timing") or {})
        out["latency_kind"] = compiled.metadata.get("latency_kind", "external")
        out["power_unavailable_reason"] = "no harness timed loop: " + (out.get("timing_note") or "emulation")
        return
    if spec.fidelity_only:
        return
    stage.enter("warmup")
    monitor = open_monitor(device, period_ms=spec.power_period_ms, estimate=spec.power_estimate,
                           source_options=spec.power_source_options)
    try:
        monitor.measure_idle(spec.power_idle_s)
        stage.enter("measure")
        cfg = loadgen.LoopConfig(spec.warmup, spec.iters, spec.runs, spec.batch)
        result = loadgen.measure(session, data.eval_images, cfg, power=monitor)
        out.update(result.summary())
        out["latency_kind"] = "simulated" if out.get("simulated") else "measured"
        np.save(spec.latency_path, result.samples_ns)
        out["raw_latency_file"] = str(Path(spec.latency_path).name)
        out.update(monitor.summarize([cfg.iters * cfg.batch] * cfg.runs, loadgen.durations_s(result)))
    finally:
        monitor.close()


def _score(spec, outputs: np.ndarray, data: JobData, out: dict[str, Any]) -> None:
    """Fidelity of the outputs against the FP32 reference (and the labels)."""
    reference = np.load(spec.reference_path)
    labels = data.eval_labels
    n = len(outputs)
    if n < len(data.eval_images):
        out["validation_note"] = (f"validation stopped after {spec.validate_budget_s:.0f} s: scored on the first "
                                  f"{n} of {len(data.eval_images)} images (raise --validate-budget)")
        reference, labels = reference[:n], None if labels is None else labels[:n]
    if outputs.shape != reference.shape:
        raise StageError("validate", "failed",
                         f"output shape {outputs.shape} differs from the reference's {reference.shape}")
    if outputs.ndim == 2:
        out.update(metrics.classification_fidelity(outputs, reference, labels))
    out["eval_samples"] = int(n)


def import_plugins(modules) -> None:
    """Import modules that register extra backends (the runner passes --plugin names through)."""
    import importlib

    for name in modules:
        importlib.import_module(name)


def _is_json(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


#: The watchdog: blocks on the runner's pipe; EOF (the runner finished the job, or died) kills the job's group.
_WATCHDOG_CODE = "import os,sys\nfd=int(sys.argv[1])\nwhile os.read(fd,1):\n    pass\nos.killpg(0,9)\n"


def guard_process() -> None:
    """Die with the runner: a parent-death signal for this process, a watchdog for the helpers it may spawn.

    Linux only (prctl); elsewhere the runner still kills the job's process group after every job.
    """
    import signal
    import subprocess

    from harness.bench.jobs import RUNNER_PID_ENV, WATCHDOG_FD_ENV, WATCHDOG_NAME

    fd, runner = os.environ.pop(WATCHDOG_FD_ENV, None), os.environ.pop(RUNNER_PID_ENV, None)
    if runner and sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if runner and os.getppid() != int(runner):
        os._exit(1)  # the runner died before the parent-death signal was armed
    if fd is not None:
        subprocess.Popen([sys.executable, "-S", "-c", _WATCHDOG_CODE, fd, WATCHDOG_NAME], pass_fds=(int(fd),),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(int(fd))


def main(argv: list[str] | None = None) -> int:
    from harness.bench.jobs import JobSpec

    guard_process()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m harness.bench.worker JOB.json", file=sys.stderr)
        return 2
    spec = JobSpec.from_json(Path(argv[0]).read_text())
    result = run_reference(spec) if spec.mode == "reference" else run_measure(spec)
    tmp = Path(spec.result_path + ".tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(spec.result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
