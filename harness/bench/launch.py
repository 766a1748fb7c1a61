"""Launch one job's worker in a child process; a crash or hang becomes a result dict, never a dead run.

A `Launcher` decides where jobs run: `LocalLauncher` (here, one child process at a time) or
`harness.fleet.launcher.DaskLauncher` (on the worker of each job's device in a Dask cluster).
"""
from __future__ import annotations

import datetime as _dt
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from backends.environments import interpreter_for
from devices import DeviceProfile
from harness.bench.jobs import JobSpec
from harness.bench.options import BenchmarkOptions
from harness.bench.plan import PlannedJob, plan_jobs
from harness.host import hostinfo
from harness.model.checkpoint import Checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]

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


# -- launchers: where a job's worker runs (the runner picks one; harness.fleet adds a Dask one) -------------
@dataclass(frozen=True)
class Launch:
    """One job handed to a launcher: the spec its worker runs, its timeout (s) and its log file."""

    job_id: str
    device: str                 # device profile name (a fleet launcher routes by it)
    spec: JobSpec
    timeout_s: float
    log_path: Path


@dataclass(frozen=True)
class Completed:
    """A finished launch: the worker's outcome dict, when it started (ISO 8601 UTC) and how long it took (s)."""

    job_id: str
    outcome: dict[str, Any]
    started_at: str
    duration_s: float
    warnings: tuple[str, ...] = ()


class Launcher(Protocol):
    """Runs jobs somewhere and hands back their outcomes; the runner writes the records.

    ``plan`` plans the run's jobs (a launcher may refuse devices it cannot reach), ``manifest_facts`` adds
    what it knows about where jobs run to the manifest, ``submit`` starts one job, ``results`` yields the
    finished ones (``block=False``: those finished so far; ``block=True``: until none is pending).
    """

    def plan(self, options: BenchmarkOptions, devices: Sequence[DeviceProfile],
             checkpoints: Sequence[Checkpoint]) -> list[PlannedJob]: ...

    def manifest_facts(self) -> dict[str, Any]: ...

    def submit(self, launch: Launch) -> None: ...

    def results(self, block: bool) -> Iterator[Completed]: ...


class LocalLauncher:
    """Each job in a child process on this host, one at a time, in submission order (the default)."""

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self._warn = warn
        self._done: list[Completed] = []

    def plan(self, options: BenchmarkOptions, devices: Sequence[DeviceProfile],
             checkpoints: Sequence[Checkpoint]) -> list[PlannedJob]:
        return plan_jobs(options, devices, checkpoints)

    def manifest_facts(self) -> dict[str, Any]:
        return {}

    def run_one(self, launch: Launch) -> Completed:
        """Run the job now: host load is sampled first (between jobs, so ours does not count), then the child."""
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        warnings: list[str] = []
        busy, load = hostinfo.host_busy()
        if busy and not launch.spec.fidelity_only:  # no timing to inflate otherwise
            warnings.append(f"other processes are using the CPUs (1-min load {load:.1f} on {os.cpu_count()} CPUs): "
                            f"latency of {launch.job_id} may be inflated")
        outcome = execute_spec(launch.spec, launch.timeout_s, launch.log_path)
        outcome.update(host_busy=busy, load_avg_1m=load)
        for w in warnings:
            if self._warn:
                self._warn(w)
        return Completed(launch.job_id, outcome, started, time.perf_counter() - t0, tuple(warnings))

    def submit(self, launch: Launch) -> None:
        self._done.append(self.run_one(launch))

    def results(self, block: bool) -> Iterator[Completed]:
        while self._done:
            yield self._done.pop(0)
