"""What runs on a fleet worker: one job (in a child process, as locally), backend probes, the worker's facts.

Everything a worker returns is JSON text (plus the raw latencies as .npy bytes, read back with
``allow_pickle=False``), so nothing a board sends is unpickled into the store.
"""
from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

#: Dask resource a worker advertises per device: ``device:<profile name>``.
RESOURCE_PREFIX = "device:"
#: Name of the plugin `python -m harness agent` installs on its worker (facts and cache directory).
AGENT_PLUGIN = "harness-agent"


def device_resource(device: str) -> str:
    return f"{RESOURCE_PREFIX}{device}"


def worker_devices(resources: dict[str, float]) -> list[str]:
    """Device names from a worker's Dask resources ({"device:rk3588": 1} -> ["rk3588"])."""
    return sorted(k[len(RESOURCE_PREFIX):] for k, v in resources.items() if k.startswith(RESOURCE_PREFIX) and v)


class AgentPlugin(WorkerPlugin):
    """Holds what the agent learnt at start-up: its facts (probed once) and its cache directory."""

    name = AGENT_PLUGIN

    def __init__(self, facts: dict[str, Any], cache_dir: str) -> None:
        self.facts = facts
        self.cache_dir = cache_dir


def local_facts(devices: list[str]) -> dict[str, Any]:
    """This host's facts for `harness fleet` and the manifest: version, host, platform, device presence."""
    from devices import load_device
    from devices.profile import ProfileError
    from harness.host import hostinfo
    from harness.host.platform_facts import platform_facts
    from harness.host.presence import device_present

    present: dict[str, Any] = {}
    profile = None
    for name in devices:
        try:
            profile = load_device(name)
            present[name] = device_present(profile)
        except (ProfileError, KeyError, OSError) as exc:
            present[name] = f"profile not found on this worker: {exc}"
    try:
        facts, warnings = platform_facts(profile)
    except Exception as exc:  # facts are nice to have; never fatal
        facts, warnings = {"error": f"{type(exc).__name__}: {exc}"}, []
    return {"harness_version": hostinfo.harness_version(), "host": hostinfo.host_facts(), "platform": facts,
            "platform_warnings": warnings, "device_present": present}


def worker_facts(dask_worker) -> str:
    """JSON facts of this worker (run through ``Client.run``): the agent's probed facts, else probed now."""
    devices = worker_devices(dict(dask_worker.state.total_resources))
    plugin = dask_worker.plugins.get(AGENT_PLUGIN)
    facts = dict(plugin.facts) if plugin is not None else local_facts(devices)
    facts.update(address=dask_worker.address, name=str(dask_worker.name), devices=devices,
                 nthreads=dask_worker.state.nthreads, agent=plugin is not None)
    return json.dumps(facts, default=str)


def probe_backends(names: list[str], plugin_modules: list[str]) -> str:
    """Availability and capabilities of backends on this worker (each probed in a child process, as locally),
    as JSON: name -> {"error", "availability", "capabilities"}."""
    from harness.bench.probe import probe_backends as probe_here

    out: dict[str, Any] = {}
    for name, r in probe_here(names, plugin_modules).items():
        out[name] = {"error": r.refusal,
                     "availability": dataclasses.asdict(r.availability) if r.availability else None,
                     "capabilities": dataclasses.asdict(r.capabilities) if r.capabilities else None}
    return json.dumps(out, default=str)


def probe_result_from_json(name: str, data: dict[str, Any]):
    """A ProbeResult from one entry of probe_backends' JSON (tuples restored)."""
    from backends.base import Availability, Capabilities
    from harness.bench.probe import ProbeResult

    avail = Availability(**data["availability"]) if data.get("availability") else None
    caps = None
    if data.get("capabilities"):
        caps = Capabilities(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["capabilities"].items()})
    return ProbeResult(name, data.get("error"), avail, caps)


def _cache_root() -> Path:
    from distributed import get_worker

    worker = get_worker()
    plugin = worker.plugins.get(AGENT_PLUGIN)
    root = Path(plugin.cache_dir) if plugin is not None else Path(worker.local_directory) / "harness-fleet"
    root.mkdir(parents=True, exist_ok=True)
    return root


def run_job(spec_json: str, files: dict[str, list], timeout_s: float,
            memory_limit_mb: float | None = None) -> tuple[str, bytes | None, bytes | None]:
    """Run one job here as the local runner would (child process, timeout) and return it as JSON + latencies.

    Args:
        spec_json: the coordinator's JobSpec; its file fields are replaced by the local copies.
        files: field name -> [sha256, file name, bytes] (the bytes arrive once per worker, scattered by hash);
            "model_files" -> [[sha256, path relative to the model's folder, bytes], ...].
        timeout_s: the job's timeout, enforced here on the child process.
        memory_limit_mb: the job's resident-memory limit (MB), enforced here; None for none.
    Returns:
        (JSON with outcome, started_at, duration_s, worker facts and warnings; the .npy bytes of the raw
        per-iteration latencies in ns, or None when the job timed nothing; the .npz bytes of the per-sample
        vectors, or None).
    """
    from distributed import get_worker

    from devices import load_device
    from harness.bench.jobs import JobSpec
    from harness.bench.launch import Launch, LocalLauncher
    from harness.fleet.blobs import materialize, materialize_model
    from harness.host import hostinfo
    from harness.host.presence import device_present

    import time

    task_start = time.time()
    worker = get_worker()
    root = _cache_root()
    spec = JobSpec.from_json(spec_json)
    model_parts = files.pop("model_files", None)
    updates: dict[str, Any] = {field: str(materialize(root, sha, filename, data))
                               for field, (sha, filename, data) in files.items()}
    if spec.model:  # the worker opens the model through spec.model: its paths become the local copies
        model = dict(spec.model)
        if model_parts:
            folder = materialize_model(root, str(model["sha256"]), [tuple(p) for p in model_parts])
            updates["checkpoint_path"] = model["path"] = str(folder / Path(str(spec.model["path"])).name)
        elif "checkpoint_path" in updates:
            model["path"] = updates["checkpoint_path"]
        for field in ("calibration_table", "qdq_path"):
            if field in updates:
                model[field] = updates[field]
        updates["model"] = model
    jobs_dir = root / "jobs" / spec.run_id
    jobs_dir.mkdir(parents=True, exist_ok=True)
    here = {f: str(jobs_dir / Path(getattr(spec, f)).name) for f in ("result_path", "stage_path", "latency_path",
                                                                      "samples_path") if getattr(spec, f)}
    updates.update(here, workdir=str(root / "artifacts"))
    if spec.outputs_cache:  # validation outputs are kept where they were computed: on the board
        updates["outputs_cache"] = str(root / "outputs")
    device = load_device(updates.get("device", spec.device))
    updates["host_substitute"] = not device_present(device)  # decided on the board, not on the coordinator
    local = dataclasses.replace(spec, **updates)
    log = Path(here["result_path"]).with_suffix(".log")
    done = LocalLauncher().run_one(Launch(spec.job_id, device.name, local, timeout_s, log, memory_limit_mb))
    outcome = dict(done.outcome)
    host = platform.node()
    if outcome.get("status") == "ok":
        outcome.update(_measured_on(device.name, spec.backend, local.host_substitute, host, outcome))
    outcome.update(fleet_worker=str(worker.name), fleet_worker_address=worker.address)
    latency = Path(local.latency_path)
    samples = Path(local.samples_path) if local.samples_path else None
    payload = {"outcome": outcome, "started_at": done.started_at, "duration_s": done.duration_s,
               "warnings": [f"[{worker.name}] {w}" for w in done.warnings],
               "harness_version": hostinfo.harness_version(), "worker": str(worker.name), "host": host,
               "task_started_epoch_s": task_start, "task_finished_epoch_s": time.time()}
    return (json.dumps(payload, default=str), latency.read_bytes() if latency.is_file() else None,
            samples.read_bytes() if samples is not None and samples.is_file() else None)


def _measured_on(device: str, backend: str, host_substitute: bool, host: str,
                 outcome: dict[str, Any]) -> dict[str, Any]:
    """Where the timed loop ran, naming the worker's host (the runner's rule, seen from the board)."""
    from harness.bench.runner import HOST_CPU_BACKENDS
    from harness.host import hostinfo

    if not host_substitute:
        return {"measured_on": f"{device} ({host})"}
    if backend in HOST_CPU_BACKENDS:
        note = f"{device} is not the worker's host {host}: timed on its CPU, not on the device"
        cpu = hostinfo.host_facts()["cpu_model"]
        return {"measured_on": f"host cpu ({cpu}) of {host}",
                "timing_note": f"{outcome['timing_note']}; {note}" if outcome.get("timing_note") else note}
    return {"measured_on": f"host (simulator/emulation) of {host}"}
