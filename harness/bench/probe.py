"""Backend availability and capability probes, each in a child process with a timeout.

Probing imports vendor SDKs, and an SDK can segfault, hang or raise at import. Run in the runner, one broken
SDK would kill the whole run at planning; run here, it becomes a reason (an `unsupported` row), and the plan
goes on.

Usage (the runner starts it): python -m harness.bench.probe BACKEND [--plugin MODULE ...]
prints one JSON object: {"availability": {...}, "capabilities": {...} | null, "error": str | null}.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from backends.base import Availability, Capabilities

#: Seconds one probe may take (an SDK import on a slow board can take a while).
PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ProbeResult:
    """What planning needs to know of one backend: refusal is None when it can be asked for jobs."""

    backend: str
    refusal: str | None
    availability: Availability | None = None
    capabilities: Capabilities | None = None


def probe_backends(names: Sequence[str], plugin_modules: Sequence[str] = (),
                   timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, ProbeResult]:
    """Probe each backend in its own child process (in parallel); never raises for a broken backend."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(4, len(names))) as pool:
        results = list(pool.map(lambda n: _probe_one(n, plugin_modules, timeout_s), names))
    return {r.backend: r for r in results}


def _probe_one(name: str, plugin_modules: Sequence[str], timeout_s: float) -> ProbeResult:
    from harness.bench.process import REPO_ROOT, kill_group, worker_env

    cmd = [sys.executable, "-m", "harness.bench.probe", name]
    for m in plugin_modules:
        cmd += ["--plugin", m]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO_ROOT),
                            env=worker_env(), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.communicate()
        return ProbeResult(name, f"{name}: the availability/capability probe hung (> {timeout_s:.0f} s) and was "
                                 "killed; check the SDK install")
    finally:
        kill_group(proc.pid)
    if proc.returncode != 0:
        why = (f"killed by signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exited with code {proc.returncode}")
        tail = " ".join(err.strip().splitlines()[-3:])[-400:]
        return ProbeResult(name, f"{name}: the availability/capability probe {why}" + (f": {tail}" if tail else ""))
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ProbeResult(name, f"{name}: the probe printed no result: {(out + err)[-300:]}")
    avail = Availability(**data["availability"]) if data.get("availability") else None
    caps = None
    if data.get("capabilities"):
        caps = Capabilities(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["capabilities"].items()})
    return ProbeResult(name, data.get("error"), avail, caps)


def _probe_here(name: str) -> dict:
    import backends

    try:
        cls = backends.get_backend(name)
    except KeyError:
        return {"error": f"backend {name!r} is not registered in this installation "
                         f"(valid: {', '.join(backends.backend_names())})"}
    try:
        avail = cls.availability()
    except Exception as exc:
        return {"error": f"{name} availability probe failed: {type(exc).__name__}: {exc}"}
    if not avail.available:
        return {"availability": dataclasses.asdict(avail), "error": f"{name} is unavailable: {avail.explain()}"}
    try:
        caps = cls().capabilities()
    except Exception as exc:
        return {"availability": dataclasses.asdict(avail),
                "error": f"{name} capabilities probe failed: {type(exc).__name__}: {exc}"}
    return {"availability": dataclasses.asdict(avail), "capabilities": dataclasses.asdict(caps), "error": None}


def main(argv: list[str] | None = None) -> int:
    from harness.bench.worker import import_plugins

    # Usage: python -m harness.bench.probe BACKEND [--plugin MODULE ...]  (started by probe_backends, not by users)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") or any(a != "--plugin" for a in argv[1::2]) or len(argv) % 2 == 0:
        print("usage: python -m harness.bench.probe BACKEND [--plugin MODULE ...]", file=sys.stderr)
        return 2
    import_plugins(argv[2::2])
    print(json.dumps(_probe_here(argv[0]), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
