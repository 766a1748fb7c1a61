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
from backends.base import CompileConfig, RuntimeConfig, UnsupportedRequest
from devices import load_device
from devices.numerics import takes_calibration
from harness.bench import loadgen
from harness.bench.options import thread_count
from harness.bench.outputs_cache import write_npz_atomic
from harness.bench.stages import StageError, StageTracker, process_age_s
from harness.bench.validation import batch_axes, score_validation, validation_outputs
from harness.data.loaders import load_job_data
from harness.model.checkpoint import Checkpoint


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
    return thread_count(spec.threads, _affinity())


def job_model(spec) -> Checkpoint:
    """The model object the runner built (inputs, outputs, data-fixed shapes, card); the file is not re-parsed."""
    if not spec.model:
        raise ValueError(f"job {spec.job_id} carries no model description; it was written by an older runner: "
                         "rerun the benchmark")
    return Checkpoint.from_dict(spec.model)


def reference_session(ckpt: Checkpoint, threads: int):
    """The FP32 reference runtime: ONNX Runtime for ONNX checkpoints, LiteRT for .tflite checkpoints."""
    if ckpt.format == "tflite":
        from backends.litert_backend import LiteRtSession

        return LiteRtSession(Path(ckpt.path), threads, nchw=False)
    from backends.onnxruntime_backend import OrtSession

    return OrtSession(Path(ckpt.path), ["CPUExecutionProvider"], threads)


def run_reference(spec) -> dict[str, Any]:
    """FP32 outputs on every evaluation sample, every output: what every fidelity metric compares against.

    Saved as an .npz with one array per output (key = output name, the output's own layout). Runs through
    loadgen.run_outputs, the one evaluator.
    """
    try:
        ckpt = job_model(spec)
        data = _load_data(spec, ckpt)
        session = reference_session(ckpt, pin_and_count_threads(spec))
        try:
            outputs = loadgen.run_outputs(session, data.eval_inputs, spec.validate_batch,
                                          batch_axes=batch_axes(ckpt), pad_last=ckpt.fixed_batch is not None)
        finally:
            session.close()
    except StageError as exc:
        return {"status": exc.status, "failed_stage": "reference", "error_message": str(exc)}
    except Exception as exc:  # the model does not run on this data in FP32: the runner says why on every job
        return {"status": "failed", "failed_stage": "reference",
                "error_message": f"{type(exc).__name__}: {exc}".strip()[:2000],
                "traceback": traceback.format_exc(limit=8)[-4000:]}
    save_outputs(spec.reference_path, ckpt, outputs)
    return {"status": "ok", "reference_shapes": {t.name: list(o.shape) for t, o in zip(ckpt.outputs, outputs)},
            "reference_runtime": reference_runtime(ckpt)}


def reference_runtime(ckpt: Checkpoint) -> str:
    return "LiteRT FP32" if ckpt.format == "tflite" else "ONNX Runtime FP32 (CPU)"


def save_outputs(path: str | Path, ckpt: Checkpoint, outputs: list[np.ndarray]) -> None:
    """One array per output, keyed by output name; atomic: a killed worker never leaves a half file."""
    write_npz_atomic(path, {t.name: o for t, o in zip(ckpt.outputs, outputs)})


def run_measure(spec) -> dict[str, Any]:
    """Compile, load, warm up, time and validate one job; every outcome (refusal, error) becomes a dict."""
    threads = pin_and_count_threads(spec)
    out: dict[str, Any] = {"threads": threads, "cpu_affinity": _affinity()}
    stage = StageTracker(spec)
    try:
        with stage.lap("prepare"):
            backend, device, data = _prepare(spec, out)
        with stage.lap("compile"):
            compiled = _compile(spec, backend, device, data, out)
        with stage.lap("model_facts"):
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
            outputs = validation_outputs(spec, session, compiled, data, out, batch_axes(data.model))
        finally:
            session.close()
        with stage.lap("score"):
            score_validation(spec, outputs, data, out)
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
    finally:
        out.setdefault("extra", {})["stage_s"] = stage.seconds()
    return out


@dataclass(frozen=True)
class JobData:
    """What a job is fed: the model object, per-input evaluation arrays (N first), labels (None when the data
    has none), the calibration set for the model's input (None when not used)."""

    model: Checkpoint
    eval_inputs: dict[str, np.ndarray]
    eval_labels: np.ndarray | None
    #: One array (single-input models) or a mapping input name -> array (several inputs).
    calibration: np.ndarray | dict[str, np.ndarray] | None

    @property
    def eval_count(self) -> int:
        return loadgen.sample_count(self.eval_inputs)


def _load_data(spec, ckpt: Checkpoint, precision: str | None = None) -> JobData:
    """The job's arrays keyed by the model's input names (harness.data's job file)."""
    evaluation, calibration = load_job_data(spec.data_path)
    inputs = dict(evaluation.inputs)
    if list(inputs) == ["input"] and ckpt.input_names != ("input",) and len(ckpt.inputs) == 1:
        inputs = {ckpt.input_name: inputs["input"]}  # a data file of the earlier layout names its one array "input"
    missing = [n for n in ckpt.input_names if n not in inputs]
    if missing:
        raise StageError("prepare", "failed", f"the job data has no array for model input(s) {missing} "
                                              f"(it has {sorted(inputs)})")
    calib = None
    if calibration is not None and len(calibration) and precision is not None and takes_calibration(precision):
        if len(ckpt.inputs) == 1:
            calib = calibration.first
        else:  # several inputs: one array per input, keyed by name (backends.base.calibration_inputs)
            missing = [n for n in ckpt.input_names if n not in calibration.inputs]
            if missing:
                raise StageError("prepare", "failed", f"the calibration data has no array for model input(s) "
                                                      f"{missing} (it has {sorted(calibration.inputs)})")
            calib = {n: calibration.inputs[n] for n in ckpt.input_names}
    return JobData(ckpt, {n: inputs[n] for n in ckpt.input_names}, evaluation.labels, calib)


def calibration_count(calibration: np.ndarray | dict[str, np.ndarray]) -> int:
    """Samples in a calibration set (one array, or one per input with the same N)."""
    return loadgen.sample_count(calibration) if isinstance(calibration, dict) else len(calibration)


def _prepare(spec, out: dict[str, Any]):
    """Plugins, device, backend (available or refused), the model object and the job's data."""
    import_plugins(spec.plugin_modules)
    device = load_device(spec.device)
    backend = backends.create_backend(spec.backend)
    avail = backend.availability()
    out["backend_version"] = avail.version
    if not avail.available:
        raise UnsupportedRequest(avail.explain())
    out["simulated"] = bool(backend.capabilities().simulated)
    data = _load_data(spec, job_model(spec), spec.precision)
    if data.calibration is not None:
        out["calibration_samples"] = calibration_count(data.calibration)
    out["input_shapes"] = {n: list(a.shape[1:]) for n, a in data.eval_inputs.items()}
    return backend, device, data


def _compile(spec, backend, device, data: JobData, out: dict[str, Any]):
    calib = data.calibration
    config = CompileConfig(precision=spec.precision, calibration=spec.calibration, per_channel=spec.per_channel,
                           activation_signed=spec.activation_signed,
                           calibration_samples=calibration_count(calib) if calib is not None else 1,
                           options=spec.options, target=spec.target)
    model = data.model.artifact()
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

    shapes = {name: (1, *arr.shape[1:]) for name, arr in data.eval_inputs.items()}
    if data.model.format == "onnx":
        stats = model_stats(str(data.model.path), shapes, {n: str(a.dtype) for n, a in data.eval_inputs.items()})
    else:
        from harness.model.stats import ModelStats

        stats = ModelStats(None, None, f"parameter and MAC counts are profiled for ONNX models only (this is "
                                       f"{data.model.format})")
    out["params"], out["macs_per_inference"] = stats.params, stats.macs_per_inference
    if stats.note:
        out.setdefault("extra", {})["model_stats_note"] = stats.note
    folder = Path(data.model.path).parent  # the model file and every external-data file it references
    out["model_size_mb"] = sum(size_mb(folder / rel) for rel, _ in data.model.files) if data.model.files \
        else size_mb(str(data.model.path))
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
        out["scenario"] = spec.scenario
        if spec.scenario == "offline":
            _offline(spec, session, data.eval_inputs, out)
        cfg = loadgen.LoopConfig(spec.warmup, spec.iters, spec.runs, spec.batch)
        result = loadgen.measure(session, data.eval_inputs, cfg, power=monitor)
        out.update(result.summary())
        out["latency_kind"] = "simulated" if out.get("simulated") else "measured"
        np.save(spec.latency_path, result.samples_ns)
        out["raw_latency_file"] = str(Path(spec.latency_path).name)
        out.update(monitor.summarize([cfg.iters * cfg.batch] * cfg.runs, loadgen.durations_s(result)))
    finally:
        monitor.close()


def _offline(spec, session, inputs, out: dict[str, Any]) -> None:
    """The offline scenario's batch sweep (harness.bench.offline); the single-stream loop still runs after it,
    so the latency and power fields keep their batch-1 meaning."""
    from harness.bench import offline

    cfg = offline.OfflineConfig(max_batch=spec.offline_max_batch, latency_limit_ms=spec.offline_latency_limit_ms,
                                memory_limit_mb=spec.memory_limit_mb)
    out.update(offline.sweep(session, inputs, cfg, rss_mb=_rss_mb).record_fields())


def _rss_mb() -> float | None:
    """This process's resident memory now (MB), from /proc (None where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return None


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
    started = process_age_s()   # interpreter start and the harness's imports, before any job work
    result = run_reference(spec) if spec.mode == "reference" else run_measure(spec)
    if started is not None and isinstance(result.get("extra", {}).get("stage_s"), dict):
        result["extra"]["stage_s"] = {"startup": round(started, 3), **result["extra"]["stage_s"]}
    tmp = Path(spec.result_path + ".tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(spec.result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
