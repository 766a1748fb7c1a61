"""A run's description of itself: ``manifest.json``, the effective model cards, and the resume check against them.

The manifest (command line, host, package versions, device profiles, checkpoint hashes, data) is what tells two
runs apart and what a resumed run must agree with; ``cards/`` holds each checkpoint's effective model card, to
repeat the run with ``--model-card``. The runner writes both once per attempt, before any job starts.
"""
from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path
from typing import Any, Sequence

from devices import DeviceProfile
from harness.bench.options import BenchmarkOptions, resume_differences
from harness.host import hostinfo
from harness.host.presence import device_present
from harness.model.checkpoint import Checkpoint
from harness.store.writer import RunStore, StoreError


def build_manifest(options: BenchmarkOptions, devices: Sequence[DeviceProfile], checkpoints: Sequence[Checkpoint],
                   eval_source: str, run_id: str, data_notes: dict[str, list[str]] | None = None
                   ) -> tuple[dict[str, Any], list[str]]:
    """The run's manifest dict and the platform warnings met while building it (never fatal)."""
    warnings: list[str] = []
    platform: dict[str, Any] = {}
    for device in devices:
        try:
            from harness.host.platform_facts import platform_facts
        except ImportError:
            break
        try:
            facts, warns = platform_facts(device)
        except Exception as exc:  # facts are nice to have; never fatal
            facts, warns = {"error": f"{type(exc).__name__}: {exc}"}, []
        platform[device.name] = facts
        warnings.extend(warns)
    manifest = {
        "run_id": run_id,
        "command": options.command or " ".join(sys.argv),
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": hostinfo.host_facts(),
        "packages": hostinfo.package_versions(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items()},
        "devices": {d.name: d.to_dict() for d in devices},
        "device_present": {d.name: device_present(d) for d in devices},
        "platform": platform,
        # Every file of every model (the .onnx and its external data) with its hash, inputs/outputs, the shapes
        # the data fixed: enough to tell two runs of "the same" model apart.
        "checkpoints": {c.name: c.to_dict() for c in checkpoints},
        # the effective model cards: pass one back with --model-card to repeat the run exactly
        "model_cards": {c.name: c.card.to_dict() for c in checkpoints if c.card is not None},
        "eval_source": eval_source,
        "data": {"path": str(options.data_path) if options.data_path else None,
                 "calib_path": str(options.calib_data_path) if options.calib_data_path else None,
                 "notes": data_notes or {}},
        "data_sha256": None,   # per checkpoint, set by run_benchmark: a resumed run must use the same data
        "warnings": warnings,
    }
    return manifest, warnings


def write_cards(run_dir: Path, checkpoints: Sequence[Checkpoint]) -> None:
    """<run>/cards/<checkpoint>.card.toml: the effective cards, to repeat the run with --model-card."""
    folder = run_dir / "cards"
    folder.mkdir(exist_ok=True)
    for ckpt in checkpoints:
        (folder / f"{ckpt.name}.card.toml").write_text(ckpt.card.to_toml())


def check_resume(manifest: dict[str, Any], options: BenchmarkOptions, checkpoints: Sequence[Checkpoint],
                 store: RunStore) -> None:
    """Raise StoreError naming every difference when a resumed run's options or checkpoints differ from the
    first attempt's manifest."""
    diffs = resume_differences(manifest.get("options") or {}, options)
    old_ckpts = manifest.get("checkpoints") or {}
    for c in checkpoints:
        old = (old_ckpts.get(c.name) or {}).get("sha256")
        if old is not None and old != c.sha256:
            diffs.append(f"checkpoint {c.name}: sha256 {old[:12]} then, {c.sha256[:12]} now")
    if diffs:
        raise StoreError(f"cannot resume run {store.run_id!r} with different options: " + "; ".join(diffs)
                         + f" (the run's command: {manifest.get('command')}); resume with the run's options, "
                           "or start a new run")
