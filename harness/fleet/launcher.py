"""The coordinator's side of a fleet: plan against the connected workers, send each job to its device's worker.

`DaskLauncher` implements `harness.bench.launch.Launcher`: the runner plans, computes the FP32 reference
and writes every record here; the jobs run on the boards. Faults become records: a worker dying mid-job is
retried once on another worker of the same device (the scheduler's ``allowed-failures`` is set to 1 at
connect), else ``crashed``; a device left with no worker gives ``crashed`` rows for its pending jobs;
results from a worker whose harness version differs from the coordinator's are refused with both versions.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import secrets
import sys
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from distributed import Client, wait

from devices import DeviceProfile
from harness.bench.launch import Completed, Launch
from harness.bench.options import BenchmarkOptions
from harness.bench.plan import PlannedJob, plan_jobs
from harness.bench.probe import ProbeResult
from harness.fleet import FleetError
from harness.fleet.blobs import Blob, blob_of, model_files, spec_files
from harness.fleet.task import (device_resource, probe_backends, probe_result_from_json, run_job, worker_devices,
                                worker_facts)
from harness.host.hostinfo import harness_version
from harness.model.checkpoint import Checkpoint

#: How many times a job may lose its worker before it is a `crashed` record: one retry on another worker.
ALLOWED_WORKER_DEATHS = 1


@dataclass(frozen=True)
class WorkerInfo:
    """One connected worker: address, name, the devices it serves, its harness version and facts (JSON)."""

    address: str
    name: str
    devices: tuple[str, ...]
    harness_version: str | None
    facts: dict[str, Any]


def list_workers(client: Client, with_facts: bool = True) -> dict[str, WorkerInfo]:
    """The workers connected to the client's scheduler (facts asked of each worker when ``with_facts``)."""
    info = client.scheduler_info(n_workers=-1).get("workers", {})
    facts: dict[str, Any] = {}
    if with_facts and info:
        answers = client.run(worker_facts, workers=list(info), on_error="return")
        for addr, text in answers.items():
            try:
                facts[addr] = json.loads(text)
            except (TypeError, ValueError):
                facts[addr] = {"error": f"no facts from this worker: {text!r}"[:300]}
    out = {}
    for addr, w in info.items():
        f = facts.get(addr, {})
        out[addr] = WorkerInfo(addr, str(w.get("name", addr)), tuple(worker_devices(w.get("resources") or {})),
                               f.get("harness_version"), f)
    return out


class DaskLauncher:
    """Runs each job on a Dask worker holding ``device:<name>`` and returns its outcome (see module doc).

    Args:
        client: a connected ``distributed.Client``.
        version: the coordinator's harness version (default: the installed one).
        warn: where warnings go (a worker's "host busy", a scheduler whose retry policy cannot be set).
        poll_s: how often pending jobs are checked for a device that lost every worker (s).
        orphan_grace_s: how long a device may have no worker before its pending jobs become `crashed` (s).
        probe_timeout_s: how long the backend probe of one device may wait for its worker (s).
        scatter_timeout_s: how long sending one file to the workers may take before the workers are listed again
            and it is sent anew (s); a worker that dies mid-transfer never answers it (Dask's scatter has no
            deadline of its own), so without one the run would wait forever.
    """

    def __init__(self, client: Client, version: str | None = None, warn: Callable[[str], None] | None = None,
                 poll_s: float = 0.5, orphan_grace_s: float = 10.0, probe_timeout_s: float = 120.0,
                 scatter_timeout_s: float = 300.0) -> None:
        self.client = client
        self.address = client.scheduler.address
        self.version = version or harness_version()
        self._warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
        self.poll_s, self.orphan_grace_s, self.probe_timeout_s = poll_s, orphan_grace_s, probe_timeout_s
        self.scatter_timeout_s = scatter_timeout_s
        self._workers: dict[str, WorkerInfo] | None = None
        self._targets: dict[str, list[str] | None] = {}   # device -> allowed worker addresses (None: any)
        self._blob_cache: dict[tuple[str, int, int], Blob] = {}
        self._scattered: dict[str, Any] = {}              # sha256 -> Future of the bytes
        self._pending: dict[str, tuple[Any, Launch, float]] = {}
        self._absent_since: dict[str, float] = {}
        self._planned_devices: set[str] = set()
        self._last_check = 0.0
        #: Per job: id, submitted/collected epochs (here), task started/finished epochs (worker clock), job s.
        self.timings: list[dict[str, Any]] = []
        self.allowed_worker_deaths = self._set_retry_policy()

    @classmethod
    def connect(cls, address: str, security: Any = None, timeout_s: float = 10.0, **kwargs: Any) -> "DaskLauncher":
        """Connect to the scheduler at ``address`` (tcp:// or tls:// with ``security``)."""
        try:
            client = Client(address, security=security, timeout=timeout_s, set_as_default=False)
        except OSError as exc:
            raise FleetError(f"cannot reach the Dask scheduler at {address} ({exc}); start it there with "
                             f"`dask scheduler --host HOST` and the agents with "
                             f"`python -m harness agent --scheduler {address}`") from None
        return cls(client, **kwargs)

    def close(self) -> None:
        self.client.close()

    # -- Launcher: planning and the manifest ------------------------------------------------------------
    def workers(self, refresh: bool = False) -> dict[str, WorkerInfo]:
        if self._workers is None or refresh:
            self._workers = list_workers(self.client)
        return self._workers

    def manifest_facts(self) -> dict[str, Any]:
        """Fleet section of the manifest; platform facts and presence come from each device's workers."""
        workers = self.workers(refresh=True)
        platform: dict[str, Any] = {}
        present: dict[str, Any] = {}
        for w in workers.values():
            for d in w.devices:
                platform.setdefault(d, {})[w.name] = w.facts.get("platform")
                present.setdefault(d, {})[w.name] = (w.facts.get("device_present") or {}).get(d)
        return {"fleet": {"scheduler": self.address, "coordinator_harness_version": self.version,
                          "allowed_worker_deaths": self.allowed_worker_deaths,
                          "workers": {w.name: dataclasses.asdict(w) for w in workers.values()}},
                "platform": platform, "device_present": present}

    def plan(self, options: BenchmarkOptions, devices: Sequence[DeviceProfile],
             checkpoints: Sequence[Checkpoint]) -> list[PlannedJob]:
        """Plan as locally, asking each device's worker which backends it can run; refused devices come first."""
        workers = self.workers()
        refusals = {d.name: self._device_refusal(d.name, workers) for d in devices}
        self._planned_devices = {name for name, why in refusals.items() if why is None}
        probes = {d.name: self._submit_probe(d, options) for d in devices if refusals[d.name] is None}
        jobs: list[PlannedJob] = []
        for device in devices:
            why = refusals[device.name]
            if why is not None:
                answers = lambda names, _plugins, why=why: {n: ProbeResult(n, why) for n in names}  # noqa: E731
            else:
                answers = lambda names, _plugins, f=probes[device.name], d=device.name: self._probe_answers(  # noqa
                    d, f, names)
            jobs += plan_jobs(options, [device], checkpoints, probe=answers)
        return sorted(jobs, key=lambda j: j.refusal is None)  # stable: refusals written before any submission

    def _device_refusal(self, device: str, workers: dict[str, WorkerInfo]) -> str | None:
        serving = [w for w in workers.values() if device in w.devices]
        if not serving:
            return (f"no worker for device {device} is connected to {self.address} (on the board: "
                    f"python -m harness agent --scheduler {self.address} --device {device})")
        same = [w.address for w in serving if w.harness_version == self.version]
        if not same:
            theirs = ", ".join(sorted({f"{w.name} runs harness {w.harness_version}" for w in serving}))
            return (f"refused: the workers of {device} differ in version ({theirs}) from this coordinator's "
                    f"harness {self.version}; install the same quanttrim-edge version on both")
        others = [w for w in serving if w.address not in same]
        for w in others:
            self._warn(f"worker {w.name} runs harness {w.harness_version}, this coordinator {self.version}: "
                       f"no job of {device} goes to it")
        self._targets[device] = same if others else None
        return None

    def _submit_probe(self, device: DeviceProfile, options: BenchmarkOptions) -> Any:
        names = [b for b in device.backends if options.backends is None or b in options.backends]
        return self.client.submit(probe_backends, names, list(options.plugin_modules), pure=False,
                                  key=f"harness-probe-{device.name}-{secrets.token_hex(3)}",
                                  resources={device_resource(device.name): 1}, workers=self._targets.get(device.name))

    def _probe_answers(self, device: str, future: Any, names: Sequence[str]) -> dict[str, ProbeResult]:
        try:
            raw = json.loads(future.result(timeout=self.probe_timeout_s))
        except Exception as exc:  # a dead or busy worker: every backend of the device is refused, with why
            future.cancel()
            why = f"the backend probe on the worker of {device} failed: {type(exc).__name__}: {exc}"
            return {n: ProbeResult(n, why) for n in names}
        return {n: probe_result_from_json(n, raw.get(n) or {"error": f"{n}: the worker did not probe it"})
                for n in names}

    # -- Launcher: running ---------------------------------------------------------------------------------
    def submit(self, launch: Launch) -> None:
        """Send the job to a worker of its device; its files are scattered once, by content hash."""
        fields = dataclasses.asdict(launch.spec)
        files: dict[str, Any] = {}
        for field, path in spec_files(fields).items():
            blob = self._blob(path)
            files[field] = [blob.sha256, blob.filename, self._scatter(blob, path)]
        parts = model_files(fields.get("model"))
        if parts:  # the model file and its external data, side by side on the worker
            files.pop("checkpoint_path", None)
            files["model_files"] = [[sha, rel, self._scatter(Blob(sha, Path(rel).name, path.stat().st_size), path)]
                                    for sha, rel, path in parts]
        future = self.client.submit(run_job, launch.spec.to_json(), files, launch.timeout_s, launch.memory_limit_mb,
                                    pure=False,
                                    key=f"harness-job-{launch.job_id}-{secrets.token_hex(3)}",
                                    resources={device_resource(launch.device): 1},
                                    workers=self._targets.get(launch.device))
        self._pending[future.key] = (future, launch, time.time())

    def results(self, block: bool) -> Iterator[Completed]:
        while self._pending:
            finished = [k for k, (f, _, _) in self._pending.items() if f.done()]
            for key in finished:
                yield self._collect(key)
            if finished:
                continue
            yield from self._orphans()
            if not block or not self._pending:
                return
            try:
                with self.client.as_current():  # wait() uses the current client; ours is not the default
                    wait([f for f, _, _ in self._pending.values()], timeout=self.poll_s,
                         return_when="FIRST_COMPLETED")
            except (TimeoutError, CancelledError):
                pass  # a future the scheduler cancelled (its worker died) is done: the next pass collects it

    @property
    def scattered_keys(self) -> list[str]:
        """The Dask keys of the files sent so far: one per distinct content (SHA-256), whatever shares it."""
        return [f.key for f in self._scattered.values()]

    # -- internals -------------------------------------------------------------------------------------------
    def _set_retry_policy(self) -> int | None:
        def set_allowed_failures(dask_scheduler, n=ALLOWED_WORKER_DEATHS):  # pickled by value: no harness needed
            dask_scheduler.allowed_failures = n
            return n

        try:
            return self.client.run_on_scheduler(set_allowed_failures)
        except Exception as exc:
            self._warn(f"could not set the scheduler's retry policy ({type(exc).__name__}: {exc}); a job whose "
                       "worker dies is retried as the scheduler's distributed.scheduler.allowed-failures says")
            return None

    def _blob(self, path: Path) -> Blob:
        st = path.stat()
        cache_key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        if cache_key not in self._blob_cache:
            self._blob_cache[cache_key] = blob_of(path)
        return self._blob_cache[cache_key]

    def _scatter(self, blob: Blob, path: Path) -> Any:
        future = self._scattered.get(blob.sha256)
        if future is not None and future.status == "finished":
            return future
        data = path.read_bytes()
        for attempt in range(3):
            live = list_workers(self.client, with_facts=False).values()  # a worker may have left since planning
            targets = [w.address for w in live if set(w.devices) & self._planned_devices]
            try:
                # Client.scatter's own timeout covers only finding workers, not the transfer: a worker killed
                # while it receives never answers, so the call is bounded here (Client.sync's callback_timeout).
                future = self.client.sync(self.client._scatter, {blob.key: data}, workers=targets or None,
                                          broadcast=True, hash=False,
                                          callback_timeout=self.scatter_timeout_s)[blob.key]
                break
            except Exception as exc:  # a worker that died between the listing and the transfer: list again
                if attempt == 2:
                    if isinstance(exc, TimeoutError):
                        raise TimeoutError(
                            f"sending {path.name} to the workers {', '.join(targets) or '(any)'} did not finish "
                            f"within {self.scatter_timeout_s:g} s, three times: a worker is not answering; "
                            "`python -m harness fleet` lists the workers (restart or stop the stuck one)") from exc
                    raise
                time.sleep(0.5)
        self._scattered[blob.sha256] = future
        return future

    def _collect(self, key: str) -> Completed:
        future, launch, submitted = self._pending.pop(key)
        now = time.time()
        job_s = None
        payload: dict[str, Any] = {}
        try:
            text, latencies, samples = future.result()
            payload = json.loads(text)
            outcome = dict(payload["outcome"])
            started, job_s = payload["started_at"], float(payload["duration_s"])
            if payload.get("harness_version") != self.version:
                outcome = {"status": "failed", "error_message":
                           f"result refused: worker {payload.get('worker')} runs harness "
                           f"{payload.get('harness_version')}, this coordinator {self.version}; install the same "
                           "quanttrim-edge version on both"}
            else:
                if latencies is not None:
                    _save_latencies(latencies, Path(launch.spec.latency_path))
                if samples is not None and launch.spec.samples_path:
                    _save_samples(samples, Path(launch.spec.samples_path))
            for w in payload.get("warnings", ()):
                self._warn(w)
        except Exception as exc:
            outcome = self._lost(launch, future, exc)
            started = _dt.datetime.fromtimestamp(submitted, _dt.timezone.utc).isoformat(timespec="seconds")
        finally:
            future.release()
        self.timings.append({"job_id": launch.job_id, "submitted_epoch_s": submitted, "collected_epoch_s": now,
                             "job_s": job_s or 0.0, "task_started_epoch_s": payload.get("task_started_epoch_s"),
                             "task_finished_epoch_s": payload.get("task_finished_epoch_s")})
        return Completed(launch.job_id, outcome, started, job_s if job_s is not None else now - submitted)

    def _lost(self, launch: Launch, future: Any, exc: BaseException) -> dict[str, Any]:
        from distributed.scheduler import KilledWorker

        if isinstance(exc, CancelledError):
            # The scheduler drops a task whose last worker died ("already forgotten"): the job's outcome is unknown.
            where = (f"no worker for device {launch.device} is connected any more"
                     if launch.device not in self._live_devices() else f"the scheduler cancelled it ({exc})")
            return {"status": "crashed", "error_message": f"{where}; the job's outcome is unknown"}
        if isinstance(exc, KilledWorker):
            last = getattr(getattr(exc, "last_worker", None), "address", "?")
            return {"status": "crashed", "error_message":
                    f"the worker running {launch.job_id} died (last: {last}) and so did the other worker of "
                    f"{launch.device} it was retried on ({exc.allowed_failures + 1} worker deaths)"}
        return {"status": "failed", "error_message": f"fleet task failed: {type(exc).__name__}: {exc}"[:2000]}

    def _live_devices(self) -> set[str]:
        """The devices that have a connected worker now."""
        return {d for w in list_workers(self.client, with_facts=False).values() for d in w.devices}

    def _orphans(self) -> Iterator[Completed]:
        """Pending jobs of a device with no connected worker for orphan_grace_s become `crashed` records."""
        now = time.monotonic()
        if now - self._last_check < self.poll_s:
            return
        self._last_check = now
        live = self._live_devices()
        for key, (future, launch, submitted) in list(self._pending.items()):
            if launch.device in live:
                self._absent_since.pop(launch.device, None)
                continue
            since = self._absent_since.setdefault(launch.device, now)
            if now - since < self.orphan_grace_s:
                continue
            del self._pending[key]
            future.cancel()
            self.timings.append({"job_id": launch.job_id, "submitted_epoch_s": submitted,
                                 "collected_epoch_s": time.time(), "job_s": 0.0})
            yield Completed(launch.job_id, {"status": "crashed", "error_message": (
                f"no worker for device {launch.device} is connected any more (its last worker left mid-run and "
                f"none came back within {self.orphan_grace_s:g} s); the job's outcome is unknown")},
                _dt.datetime.fromtimestamp(submitted, _dt.timezone.utc).isoformat(timespec="seconds"),
                time.time() - submitted)


def _save_samples(data: bytes, path: Path) -> None:
    """Store a worker's per-sample vectors: an .npz parsed without pickle (numeric arrays only), written anew."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for k, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise ValueError(f"per-sample vectors must be numeric, got {k} of dtype {a.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to another suffix
        np.savez(f, **arrays)


def _save_latencies(data: bytes, path: Path) -> None:
    """Store a worker's raw latencies: parsed as .npy without pickle, integers only, then written anew."""
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.dtype.kind not in "iu":
        raise ValueError(f"raw latencies must be integer nanoseconds, got dtype {array.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
