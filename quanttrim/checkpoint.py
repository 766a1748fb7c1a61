"""Checkpoint files: one torch file holding the config, model/optimizer/scheduler state and position.

Written atomically (temp file + rename), so an interruption during a save never leaves a half file;
read with clear errors for missing, corrupt and foreign files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "quanttrim-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, not ours, or for a different model."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/garbage files
        raise CheckpointError(
            f"checkpoint {path} is not readable (corrupt or truncated file?): {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a quanttrim checkpoint (format {found!r}, expected {FORMAT!r})")
    for key in ("train_config", "model", "model_spec"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}; it was not written by this trainer version")
    return ckpt
