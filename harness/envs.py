"""Per-backend Python environments for toolchains whose pins conflict with the main one (e.g. RKNN)."""
from __future__ import annotations

from pathlib import Path


def interpreter_for(backend: str) -> str | None:
    """Path of the Python interpreter that must run jobs of ``backend``, or None for this one."""
    return None


def env_root() -> Path:
    return Path.home() / ".cache" / "quanttrim-harness" / "envs"
