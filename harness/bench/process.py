"""Child-process plumbing shared by the job launcher and the planning probes: the environment a worker starts
with, and killing a job's whole process group."""
from __future__ import annotations

import os
import signal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def worker_env() -> dict[str, str]:
    """The worker's environment: this package first on the path, then the caller's folder (for --plugin modules)."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), os.getcwd()] + [p for p in [env.get("PYTHONPATH")] if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the job's group (the worker is its leader); a gone group is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
