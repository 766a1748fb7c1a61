"""The FP32 reference every job is scored against: its runtime, its cache file, and the child that computes it.

ONNX Runtime on the CPU (LiteRT for a ``.tflite`` checkpoint) runs the checkpoint at fp32 over the evaluation
data in a worker child (JobSpec mode ``reference``) and saves an ``.npz`` with one array per output, keyed by
output name. The file lives in the results folder's ``.cache/references/``, named by the checkpoint's hash, the
evaluation data's hash (harness.bench.runner.eval_digest: the calibration arrays are left out, so studies that
differ only in the calibration draw share it), runtime version and threads: a later run reuses it only for the
same model on the same evaluation data through the same runtime (issue 18: warm runs). The runner decides when a reference is needed and builds its JobSpec.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from harness.bench.jobs import JobSpec
from harness.bench.launch import execute_spec
from harness.bench.options import BenchmarkOptions, thread_count
from harness.bench.plan import PlannedJob
from harness.model.checkpoint import Checkpoint
from harness.store.writer import RunStore


def reference_backend(checkpoint: Checkpoint) -> str:
    """The backend that computes the reference: ``litert`` for a .tflite checkpoint, else ``onnxruntime``."""
    return "litert" if checkpoint.format == "tflite" else "onnxruntime"


def reference_runtime_name(checkpoint: Checkpoint) -> str:
    """The reference runtime as a user reads it in an error: ``LiteRT`` or ``ONNX Runtime``."""
    return "LiteRT" if checkpoint.format == "tflite" else "ONNX Runtime"


def reference_runtime_label(checkpoint: Checkpoint) -> str:
    """The records' ``reference_runtime`` field: ``LiteRT FP32`` or ``ONNX Runtime FP32 (CPU)``."""
    return "LiteRT FP32" if checkpoint.format == "tflite" else "ONNX Runtime FP32 (CPU)"


def reference_runtime_tag(checkpoint: Checkpoint, options: BenchmarkOptions) -> str:
    """The reference runtime as it decides the reference's floating-point results: package, version, threads.

    Threads are resolved as the worker resolves them (harness.bench.options.thread_count)."""
    from importlib import metadata

    package = "ai-edge-litert" if checkpoint.format == "tflite" else "onnxruntime"
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = "absent"
    try:
        cpus = options.cpu_affinity or tuple(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    return f"{package}-{version}-t{thread_count(options.threads, cpus)}"


def reference_path(checkpoint: Checkpoint, options: BenchmarkOptions, store: RunStore, data_sha256: str) -> Path:
    """Where this checkpoint's reference over this evaluation data (``data_sha256``: runner.eval_digest), through
    this runtime, is cached (it may not exist yet)."""
    return store.layout.reference_file(checkpoint.name, checkpoint.sha256, data_sha256,
                                       reference_runtime_tag(checkpoint, options))


def reusable(path: Path) -> bool:
    """True when a cached reference exists and every array reads back; a torn or truncated file (a full disk, a
    killed writer) is removed, to be computed again, never trusted."""
    if not path.exists():
        return False
    if _readable_npz(path):
        return True
    path.unlink()
    return False


def reference_job(job: PlannedJob) -> PlannedJob:
    """The FP32 job on the reference runtime that computes ``job``'s reference (same device and checkpoint)."""
    return PlannedJob(job.device, job.checkpoint, reference_backend(job.checkpoint), "fp32", None, True, False,
                      job.job_id)


def compute_reference(spec: JobSpec, options: BenchmarkOptions, store: RunStore) -> Path | str:
    """Run a ``reference`` JobSpec in a child process (the run's timeout and memory limit).

    Returns the written .npz (``spec.reference_path``), or the error message when the child failed or wrote
    nothing."""
    ref_path = Path(spec.reference_path)
    ref_path.parent.mkdir(parents=True, exist_ok=True)
    outcome = execute_spec(spec, options.timeout_s, store.attempt_file(f"reference__{spec.checkpoint}", "log"),
                           memory_limit_mb=options.memory_limit_mb)
    if outcome.get("status") != "ok" or not ref_path.exists():
        return outcome.get("error_message") or "unknown error"
    return ref_path


def _readable_npz(path: Path) -> bool:
    """True when every array of the .npz reads back (the zip's CRCs checked)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            for name in z.files:
                z[name]
        return True
    except Exception:  # any damage: zipfile.BadZipFile, OSError, ValueError, EOFError
        return False
