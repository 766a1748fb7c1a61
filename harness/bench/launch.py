"""Launch one job's worker in a child process; a crash, hang or memory blow-up becomes a result dict, never a dead run.

A `Launcher` decides where jobs run: `LocalLauncher` (here, one child process at a time) or
`harness.fleet.launcher.DaskLauncher` (on the worker of each job's device in a Dask cluster).

Process rules (issue 14):
- the worker runs in its own process group (a new session), so the whole job — the worker and any helper a
  backend spawned — is killed with one ``killpg`` after every job, normal exit included;
- the worker dies with its runner: it sets a parent-death signal, and it starts a watchdog in its group that
  blocks on a pipe whose only write end this process holds; when the runner exits (even by SIGKILL) the pipe
  closes and the watchdog kills the group;
- the worker is reaped with ``os.wait4``, whose resource usage gives the job's peak resident memory; with a
  memory limit the group's resident memory is polled and the job is killed once it exceeds the limit.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

import psutil

from backends.environments import interpreter_for
from harness.bench.jobs import RUNNER_PID_ENV, WATCHDOG_FD_ENV, WATCHDOG_NAME, JobSpec
from harness.bench.process import REPO_ROOT, kill_group, worker_env
from harness.host import hostinfo

if TYPE_CHECKING:  # pragma: no cover
    from devices import DeviceProfile
    from harness.bench.options import BenchmarkOptions
    from harness.bench.plan import PlannedJob
    from harness.model.checkpoint import Checkpoint

_POLL_S = 0.05


def _worker_command(backend: str) -> list[str]:
    return [interpreter_for(backend) or sys.executable, "-m", "harness.bench.worker"]


def execute_spec(spec: JobSpec, timeout_s: float, log_path: Path,
                 memory_limit_mb: float | None = None) -> dict[str, Any]:
    """Run the worker in a child process; turn a crash, hang or memory blow-up into a result dict.

    The dict always has ``status``; ``peak_rss_mb`` (the worker's peak resident memory, MB) when it was reaped.
    KeyboardInterrupt kills the job's process group and propagates.
    """
    result_path, stage_path = Path(spec.result_path), Path(spec.stage_path)
    for stale in (result_path, stage_path, Path(spec.latency_path)):
        stale.unlink(missing_ok=True)
    job_file = result_path.with_suffix(".job.json")
    spec.write(job_file)
    stage_path.write_text("reference" if spec.mode == "reference" else "compile")
    env = worker_env()
    read_fd, write_fd = os.pipe()
    env[WATCHDOG_FD_ENV], env[RUNNER_PID_ENV] = str(read_fd), str(os.getpid())
    with open(log_path, "w") as log:
        try:
            proc = subprocess.Popen(_worker_command(spec.backend) + [str(job_file)], stdout=log,
                                    stderr=subprocess.STDOUT, cwd=str(REPO_ROOT), env=env, start_new_session=True,
                                    pass_fds=(read_fd,))
        finally:
            os.close(read_fd)
        try:
            rc, peak_mb, oom, cpu_s = _wait(proc, timeout_s, memory_limit_mb)
        finally:
            kill_group(proc.pid)     # helpers never outlive the job, whatever happened
            os.close(write_fd)       # and the watchdog (in the group) is gone with them
            if proc.returncode is None:
                _reap(proc)
    stage = _read_stage(stage_path)
    extra = {"peak_rss_mb": round(peak_mb, 1)} if peak_mb else {}
    if cpu_s is not None:   # on a shared host the honest cost of a job: its CPU seconds, not its wall time
        extra["worker_cpu_s"] = round(cpu_s, 3)
    if oom:
        return {"status": "failed", "failed_stage": stage, **extra,
                "error_message": f"out of memory at {peak_mb:.0f} MB during {stage} (--memory-limit "
                                 f"{memory_limit_mb:.0f} MB); the job was killed"}
    if rc is None:
        return {"status": "timeout", "failed_stage": stage, **extra,
                "error_message": f"job exceeded its {timeout_s:.0f} s timeout during {stage}; raise it with --timeout"}
    if result_path.exists():
        outcome = json.loads(result_path.read_text())
        outcome.update(extra)
        return outcome
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    why = f"killed by signal {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc} without a result"
    # The log's last line leads: for a Python traceback it is the exception itself, which the tail may cut.
    last = next((line.strip() for line in reversed(log.splitlines()) if line.strip()), "")
    lead = f": {last[:300]}" if last else ""
    return {"status": "crashed", "failed_stage": stage, **extra,
            "error_message": f"worker {why} during {stage}{lead}. Log tail: {log[-1500:]}"}


def _read_stage(path: Path) -> str:
    try:
        return path.read_text().strip() or "compile"
    except OSError:
        return "compile"


def _wait(proc: subprocess.Popen, timeout_s: float, memory_limit_mb: float | None
          ) -> tuple[int | None, float | None, bool, float | None]:
    """(exit code or None on timeout, peak RSS in MB, killed for memory, CPU seconds (user + sys of the worker and
    the children it waited for; None when it was not reaped here)) of the worker."""
    deadline = time.monotonic() + timeout_s
    sampled_mb = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return (proc.returncode, max(usage.ru_maxrss / 1024.0, sampled_mb), False,  # ru_maxrss: KiB on Linux
                    usage.ru_utime + usage.ru_stime)
        if memory_limit_mb is not None:
            sampled_mb = max(sampled_mb, group_rss_mb(proc.pid))
            if sampled_mb > memory_limit_mb:
                kill_group(proc.pid)
                return None, sampled_mb, True, None
        if time.monotonic() >= deadline:
            return None, sampled_mb or None, False, None
        time.sleep(_POLL_S)


def group_rss_mb(pid: int) -> float:
    """Resident memory (MB) of ``pid`` and its descendants, the job's watchdog excluded."""
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0.0
    total = 0
    for p in procs:
        try:
            if p.pid != pid and p.cmdline()[-1:] == [WATCHDOG_NAME]:
                continue
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / (1024.0 * 1024.0)


def _reap(proc: subprocess.Popen) -> None:
    try:
        _, status, _ = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        proc.returncode = proc.returncode if proc.returncode is not None else -9


# -- launchers: where a job's worker runs (the runner picks one; harness.fleet adds a Dask one) -------------
@dataclass(frozen=True)
class Launch:
    """One job handed to a launcher: the spec its worker runs, its timeout (s) and its log file."""

    job_id: str
    device: str                 # device profile name (a fleet launcher routes by it)
    spec: JobSpec
    timeout_s: float
    log_path: Path
    memory_limit_mb: float | None = None


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
        from harness.bench.plan import plan_jobs  # plan imports the probe, which imports this module

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
        outcome = execute_spec(launch.spec, launch.timeout_s, launch.log_path, memory_limit_mb=launch.memory_limit_mb)
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
