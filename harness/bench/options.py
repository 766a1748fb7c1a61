"""The options of one benchmark run (what `python -m harness run` was asked for), typed and validated."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from devices.choices import unknown_name
from devices.numerics import validate_precision

#: Timing scenarios (MLPerf's names): batch-1 latency, or maximum throughput.
SCENARIOS = ("single-stream", "offline")

def thread_count(threads: int | None, cpus: Sequence[int] | None) -> int:
    """The threads a job (or the FP32 reference) runs with: ``threads`` when given, else one per CPU in ``cpus``
    (the affinity it runs under; None where it cannot be read), else ``os.cpu_count()``. The worker resolves every
    job's threads with it and the runner names the cached reference by it, so the two agree."""
    return threads or len(cpus or ()) or os.cpu_count() or 1


#: The smoke protocol of --quick.
QUICK = {"warmup": 5, "iters": 50, "runs": 1, "eval_samples": 500}


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
    #: 20 s (was 60): every backend at ~1 ms or less scores all 10,000 test images well inside it; a slow one
    #: (untuned TVM INT8 at ~25-70 ms per image) scores ~300-800 and says so, instead of holding the default run
    #: for a minute per job (issue 18: the default run in under 3 minutes).
    validate_budget_s: float | None = 20.0
    #: Reuse a complete validation pass an earlier run computed for the same artifact, runtime, threads and data
    #: (harness.bench.outputs_cache; the record says so). False (--revalidate): every job runs its pass.
    reuse_outputs: bool = True
    #: Plan every job the devices offer, including those the default run leaves out (harness.bench.plan:
    #: untuned TVM INT8); the default run is one that names no --backends and no --precisions.
    all_jobs: bool = False
    threads: int | None = None
    cpu_affinity: tuple[int, ...] | None = None
    power_period_ms: float = 10.0
    power_estimate: bool = False
    power_source_options: tuple[tuple[str, str, Any], ...] = ()   # (source, key, value)
    prefer_full_dataset: bool = True
    #: The user's evaluation data (folder of images, .npz, .npy; absolute) — None: the Fashion-MNIST demo.
    data_path: Path | None = None
    #: The user's calibration data (same forms) — None: a seeded split of data_path, disjoint from evaluation.
    calib_data_path: Path | None = None
    #: A model card (TOML) for every checkpoint — None: <stem>.card.toml beside the model, else inferred.
    model_card_path: Path | None = None
    #: Modules imported (here and in each worker) to register backends outside the entry points.
    plugin_modules: tuple[str, ...] = ()
    #: Backend-specific compile options (key, value), e.g. ("target", "dla0"), ("tuning_trials", 64).
    backend_options: tuple[tuple[str, Any], ...] = ()
    #: Backend target, e.g. an OpenVINO plugin ("GPU", "NPU"), "dla0" for TensorRT, an adb device id for RKNN.
    target: str | None = None
    #: Kill a job whose resident memory (worker and its helpers) exceeds this many MB (None: no limit).
    memory_limit_mb: float | None = None
    #: "single-stream" (batch-1 latency, the default) or "offline" (throughput: a batch sweep, then the
    #: runtime's streams where it has them; harness.bench.offline).
    scenario: str = "single-stream"
    #: Offline: the largest batch of the sweep, and the median latency (ms) past which it stops.
    offline_max_batch: int = 64
    offline_latency_limit_ms: float = 1000.0
    command: str = ""

    def __post_init__(self) -> None:
        from harness.store.layout import validate_run_id

        if self.run_id is not None:
            validate_run_id(self.run_id)
        # paths are absolute from here on: workers run in another folder (frozen, hence object.__setattr__)
        object.__setattr__(self, "results_dir", Path(self.results_dir).expanduser().absolute())
        object.__setattr__(self, "checkpoints", tuple(str(Path(c).expanduser().absolute()) for c in self.checkpoints))
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
        if self.scenario not in SCENARIOS:
            raise ValueError(unknown_name("--scenario", self.scenario, SCENARIOS))
        if self.offline_max_batch < 1 or self.offline_latency_limit_ms <= 0:
            raise ValueError("--max-batch must be >= 1 and --latency-limit > 0 (ms)")
        if self.memory_limit_mb is not None and self.memory_limit_mb <= 0:
            raise ValueError("--memory-limit must be > 0 (MB)")
        if self.calib_data_path is not None and self.data_path is None:
            raise ValueError("--calib-data needs --data (the demo calibrates on Fashion-MNIST's training split)")
        for flag, path in (("--data", self.data_path), ("--calib-data", self.calib_data_path),
                           ("--model-card", self.model_card_path)):
            if path is not None and not Path(path).exists():
                raise ValueError(f"{flag} {path} does not exist")

    def data_request(self):
        """The data this run evaluates and calibrates on (harness.data.prepare.DataRequest)."""
        from harness.data.prepare import DataRequest

        n_eval = QUICK["eval_samples"] if self.quick and self.eval_samples is None else self.eval_samples
        return DataRequest(self.data_path, self.calib_data_path, n_eval, self.calib_samples, self.calib_seed,
                           self.prefer_full_dataset)

    def loop(self) -> dict[str, int]:
        if self.quick:
            return {"warmup": QUICK["warmup"], "iters": QUICK["iters"], "runs": QUICK["runs"]}
        return {"warmup": self.warmup, "iters": self.iters, "runs": self.runs}


#: Options that define what a record means (protocol and data): a resumed run must keep them.
RESUME_KEYS = ("quick", "warmup", "iters", "runs", "batch", "scenario", "offline_max_batch",
               "offline_latency_limit_ms", "fidelity_only", "eval_samples", "calib_samples",
               "calib_seed", "prefer_full_dataset", "data_path", "calib_data_path", "model_card_path")


def resume_differences(manifest_options: dict[str, Any], options: BenchmarkOptions) -> list[str]:
    """``"name: X then, Y now"`` for each protocol/data option that differs from the run's manifest."""
    import json

    diffs = []
    for key in RESUME_KEYS:
        if key not in manifest_options:
            continue
        then = json.loads(json.dumps(manifest_options[key], default=str))
        now = json.loads(json.dumps(getattr(options, key), default=str))
        if then != now:
            diffs.append(f"{key}: {then!r} then, {now!r} now")
    return diffs
