"""Launch one job's worker in a child process; a crash, hang or memory blow-up becomes a result dict, never a dead run.

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

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from backends.environments import interpreter_for
from harness.bench.jobs import RUNNER_PID_ENV, WATCHDOG_FD_ENV, WATCHDOG_NAME, JobSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
_POLL_S = 0.05


def _worker_command(backend: str) -> list[str]:
    return [interpreter_for(backend) or sys.executable, "-m", "harness.bench.worker"]


def worker_env() -> dict[str, str]:
    """The worker's environment: this package first on the path, then the caller's folder (for --plugin modules)."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), os.getcwd()] + [p for p in [env.get("PYTHONPATH")] if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


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
    stage_path.write_text("compile")
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
            rc, peak_mb, oom = _wait(proc, timeout_s, memory_limit_mb)
        finally:
            kill_group(proc.pid)     # helpers never outlive the job, whatever happened
            os.close(write_fd)       # and the watchdog (in the group) is gone with them
            if proc.returncode is None:
                _reap(proc)
    stage = _read_stage(stage_path)
    extra = {"peak_rss_mb": round(peak_mb, 1)} if peak_mb else {}
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
    tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
    why = f"killed by signal {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc} without a result"
    return {"status": "crashed", "failed_stage": stage, **extra,
            "error_message": f"worker {why} during {stage}. Log tail: {tail}"}


def _read_stage(path: Path) -> str:
    try:
        return path.read_text().strip() or "compile"
    except OSError:
        return "compile"


def _wait(proc: subprocess.Popen, timeout_s: float, memory_limit_mb: float | None
          ) -> tuple[int | None, float | None, bool]:
    """(exit code or None on timeout, peak RSS in MB, killed for memory) of the worker."""
    deadline = time.monotonic() + timeout_s
    sampled_mb = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, max(usage.ru_maxrss / 1024.0, sampled_mb), False  # ru_maxrss: KiB on Linux
        if memory_limit_mb is not None:
            sampled_mb = max(sampled_mb, group_rss_mb(proc.pid))
            if sampled_mb > memory_limit_mb:
                kill_group(proc.pid)
                return None, sampled_mb, True
        if time.monotonic() >= deadline:
            return None, sampled_mb or None, False
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


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the job's group (the worker is its leader); a gone group is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(proc: subprocess.Popen) -> None:
    try:
        _, status, _ = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        proc.returncode = proc.returncode if proc.returncode is not None else -9
