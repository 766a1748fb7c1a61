"""The agent on a board: a Dask worker that runs one job at a time and advertises ``device:<name>=1``.

The device defaults to the profile that matches this board (presence probes and the board model from the
platform facts); a host matching no board profile is the ``cpu`` profile. Without TLS the worker listens only
on the address given (default: this host's address on the route to the scheduler), never on every
interface, and no dashboard is served.
"""
from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Any, Sequence

from devices import DeviceProfile, load_all_devices

#: Words of a profile's display name that do not identify the board (vendor, memory size).
_NOISE = {"nvidia", "gb", "developer", "kit"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _NOISE and not w.isdigit()}


def match_profile(present: Sequence[DeviceProfile], board_model: str | None) -> tuple[str | None, str]:
    """The profile this board is, among the ``present`` ones (form factor host_cpu excluded), and why.

    Several present profiles (every Jetson profile is present on any Jetson) are told apart by the board
    model (``/proc/device-tree/model``): the profile whose display-name words all occur in it, most words
    winning. Returns (name or None, explanation).
    """
    boards = [d for d in present if d.form_factor != "host_cpu"]
    if not boards:
        return "cpu", "no board profile matches this host: it is the host CPU (profile cpu)"
    if len(boards) == 1:
        return boards[0].name, f"this host is a {boards[0].display_name}"
    model = _words(board_model or "")
    fits = sorted(((len(_words(d.display_name)), d) for d in boards if _words(d.display_name) <= model),
                  key=lambda t: -t[0])
    if fits and (len(fits) == 1 or fits[0][0] > fits[1][0]):
        return fits[0][1].name, f"board model {board_model!r} is a {fits[0][1].display_name}"
    names = ", ".join(d.name for d in boards)
    return None, f"this host matches several profiles ({names}) and its board model {board_model!r} does not " \
                 "tell them apart: pass --device NAME"


def default_device() -> str:
    """The device profile name of this board (see match_profile); raises FleetError when it is ambiguous."""
    from harness.host.platform_facts import platform_facts
    from harness.host.presence import device_present

    present = [d for d in load_all_devices() if device_present(d)]
    facts, _ = platform_facts(None)
    name, why = match_profile(present, facts.get("jetson_model"))
    if name is None:
        from harness.fleet import FleetError

        raise FleetError(why)
    return name


def serve(scheduler: str, device: str, listen: str | None = None, name: str | None = None,
          cache_dir: Path | None = None, security: Any = None) -> None:
    """Run the worker until it is stopped (Ctrl-C) or the scheduler closes; one job at a time.

    Args:
        scheduler: the scheduler's address, tcp://HOST:8786 or tls://HOST:8786.
        device: profile name advertised as the resource ``device:<device>=1``.
        listen: host or IP the worker binds to (default: this host's address on the route to the scheduler).
        name: worker name (default: ``<device>@<hostname>``).
        cache_dir: where transferred files and compiled artifacts are kept (default ~/.cache/quanttrim-fleet).
        security: a ``distributed.security.Security`` for TLS, or None.
    """
    import platform

    from distributed import Worker
    from distributed.utils import get_ip

    from harness.fleet.task import AgentPlugin, device_resource, local_facts

    cache = Path(cache_dir or Path.home() / ".cache" / "quanttrim-fleet")
    cache.mkdir(parents=True, exist_ok=True)
    host = listen or get_ip(scheduler.split("://")[-1].rsplit(":", 1)[0])
    plugin = AgentPlugin(local_facts([device]), str(cache))

    async def run() -> None:
        worker = await Worker(scheduler, nthreads=1, resources={device_resource(device): 1}, host=host,
                              name=name or f"{device}@{platform.node()}", dashboard=False, security=security,
                              local_directory=str(cache / "dask-scratch"), plugins=(plugin,))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # a clean goodbye to the scheduler, not a traceback
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        print(f"agent {worker.name} serving device {device} at {worker.address}, scheduler {scheduler}", flush=True)
        finished, stopped = asyncio.ensure_future(worker.finished()), asyncio.ensure_future(stop.wait())
        await asyncio.wait([finished, stopped], return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            # a running job is not waited for: its child process dies with this one (the job's watchdog)
            await worker.close(executor_wait=False)
            print(f"agent {worker.name} stopped", flush=True)
        for task in (finished, stopped):
            task.cancel()

    asyncio.run(run())
