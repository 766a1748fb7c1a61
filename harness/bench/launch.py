"""Launch one job's worker in a child process; a crash or hang becomes a result dict, never a dead run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from backends.environments import interpreter_for
from harness.bench.jobs import JobSpec

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
