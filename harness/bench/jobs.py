"""A job: one (checkpoint, device, backend, precision, calibration) measurement, as passed to the worker."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.store.layout import file_stem_part

#: Environment variables the runner sets for the worker (harness.bench.launch -> harness.bench.worker).
WATCHDOG_FD_ENV = "QUANTTRIM_WATCHDOG_FD"     # read end of the pipe whose EOF means "the runner is gone"
RUNNER_PID_ENV = "QUANTTRIM_RUNNER_PID"
#: The last argument of the watchdog process, so its memory is not counted as the job's.
WATCHDOG_NAME = "qt-watchdog"


@dataclass(frozen=True)
class JobSpec:
    """Everything the child process needs; serialised as JSON so any interpreter can run it."""

    run_id: str
    job_id: str
    mode: str                      # "measure" or "reference"
    device: str                    # profile name or path
    backend: str
    precision: str
    checkpoint: str                # name
    checkpoint_path: str
    calibration: str | None
    per_channel: bool
    activation_signed: bool
    data_path: str                 # npz with eval_images, eval_labels, calib_images
    reference_path: str            # npz with the FP32 reference outputs, one array per output (key = name)
    result_path: str               # where the worker writes its JSON result
    stage_path: str                # the worker writes its current stage here (for timeouts)
    latency_path: str              # raw per-iteration latencies (.npy, ns)
    workdir: str                   # compiled-artifact cache
    warmup: int = 20
    iters: int = 200
    runs: int = 5
    batch: int = 1
    validate_batch: int = 1
    validate_budget_s: float | None = 20.0
    fidelity_only: bool = False
    threads: int | None = None
    cpu_affinity: tuple[int, ...] | None = None
    power_period_ms: float = 10.0
    power_estimate: bool = False
    power_idle_s: float = 1.0
    #: Keyword options per power source, e.g. {"usb_meter": {"port": "/dev/ttyUSB0"}}.
    power_source_options: dict[str, dict[str, Any]] | None = None
    host_substitute: bool = False
    calibration_table: str | None = None
    qdq_path: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    target: str | None = None
    #: "single-stream" or "offline" (harness.bench.offline), with the offline sweep's limits.
    scenario: str = "single-stream"
    offline_max_batch: int = 64
    offline_latency_limit_ms: float = 1000.0
    memory_limit_mb: float | None = None
    #: Modules to import before the backend is created (adapters outside entry points, test fakes).
    plugin_modules: tuple[str, ...] = ()
    #: The model object (harness.model.checkpoint.Checkpoint.to_dict()): inputs, outputs, shapes fixed from the
    #: data, file hashes. The worker builds everything from it and never re-parses the model file.
    model: dict[str, Any] | None = None
    #: Where the validation stage writes the per-sample vectors (.npz; None: not kept).
    samples_path: str | None = None
    #: sha256 of the job's evaluation data (harness.bench.runner.eval_digest; the calibration arrays are not in it:
    #: they reach a pass only through the artifact, whose bytes the key names): part of the validation outputs' key.
    data_sha256: str | None = None
    #: Folder of validation outputs kept across runs (harness.bench.outputs_cache; None: always validate).
    outputs_cache: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        data = json.loads(text)
        data["options"] = tuple(tuple(kv) for kv in data.get("options", ()))
        data["plugin_modules"] = tuple(data.get("plugin_modules", ()))
        if data.get("cpu_affinity") is not None:
            data["cpu_affinity"] = tuple(data["cpu_affinity"])
        return cls(**data)

    def write(self, path: Path) -> None:
        Path(path).write_text(self.to_json())


def make_job_id(checkpoint: str, device: str, backend: str, precision: str, calibration: str | None,
                per_channel: bool = True) -> str:
    """The job's id, ``checkpoint__device__backend__precision[__calibration][__pc|__pt]`` as a file-name-safe
    string (harness.store.layout.file_stem_part); the granularity suffix only for int*/w* precisions."""
    parts = [checkpoint, device, backend, precision]
    if calibration:
        parts.append(calibration)
    if precision.startswith("int") or precision.startswith("w"):
        parts.append("pc" if per_channel else "pt")
    return file_stem_part("__".join(parts))
