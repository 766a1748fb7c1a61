"""A fleet in this process: a Dask LocalCluster on loopback whose workers each advertise one fake board."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.bench.options import BenchmarkOptions

NEEDS = 'the fleet needs pip install ".[fleet]"'

#: Fakes of the paper's boards: tiny profiles, each timed on this host's CPU through ONNX Runtime.
BOARDS = ("fake_jetson_nano", "fake_jetson_orin", "fake_jetson_orin_nano", "fake_rk3588", "fake_hardware_a",
          "fake_hardware_b", "fake_hardware_d", "fake_desktop_gpu")
FAKE_PLUGIN = ("tests.fakes.backends",)


def board_profile(tmp_path: Path, name: str, backends: tuple[str, ...] = ("onnxruntime",)) -> str:
    """A device profile file for a fake board (form factor host_cpu: present on any host)."""
    path = tmp_path / "profiles" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    quoted = ", ".join(f'"{b}"' for b in backends)
    path.write_text(f'name = "{name}"\ndisplay_name = "fake {name}"\nform_factor = "host_cpu"\n'
                    f'backends = [{quoted}]\nprecisions = ["fp32"]\n')
    return str(path)


def run_options(tmp_path: Path, model: Path, devices: tuple[str, ...], results: str = "results",
                **kw) -> BenchmarkOptions:
    base = dict(devices=devices, checkpoints=(str(model),), warmup=1, iters=5, runs=1, eval_samples=16,
                calib_samples=8, results_dir=tmp_path / results, prefer_full_dataset=False,
                plugin_modules=FAKE_PLUGIN, timeout_s=120)
    base.update(kw)
    return BenchmarkOptions(**base)


class Fleet:
    """The cluster, a client, and workers added or killed by name."""

    def __init__(self) -> None:
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                                    scheduler_port=0, dashboard_address=None)
        self.client = Client(self.cluster, set_as_default=False)

    def add(self, device: str, name: str | None = None, cls: type | None = None) -> str:
        """Start a worker serving ``device`` (one thread, resource device:<name>=1; ``cls``: a Worker subclass);
        returns its name."""
        from distributed import Worker

        from harness.fleet.task import device_resource

        name = name or f"w-{device}"
        self.cluster.worker_spec[name] = {"cls": cls or Worker, "options": {
            "nthreads": 1, "resources": {device_resource(device): 1}, "host": "127.0.0.1"}}
        self.cluster.scale(len(self.cluster.worker_spec))
        self.client.wait_for_workers(len(self.cluster.worker_spec), timeout=60)
        return name

    def kill(self, name: str) -> None:
        """Drop a worker without a goodbye to the scheduler: its running task counts as lost, as on a dead board."""
        worker = self.cluster.workers.pop(name)
        del self.cluster.worker_spec[name]
        # A dead board's connections are refused at once, so the scheduler forgets it; an in-process worker whose
        # close is slow (a loaded host) lingers half-closed and takes file transfers it never answers. The scheduler
        # is told first, as the lost connection would tell it, then the worker stops.
        self.cluster.sync(self.cluster.scheduler.remove_worker, address=worker.address, stimulus_id="test-kill",
                          close=False)
        self.cluster.sync(worker.close, executor_wait=False, timeout=5)

    def wait_submitted(self, n_jobs: int, timeout_s: float = 60) -> None:
        """Wait until the scheduler holds ``n_jobs`` harness job tasks: every job's files have been sent by then."""
        def count(dask_scheduler):  # pickled by value
            return sum(1 for k in dask_scheduler.tasks if str(k).startswith("harness-job-"))

        deadline = time.monotonic() + timeout_s
        while self.client.run_on_scheduler(count) < n_jobs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n_jobs} jobs submitted within {timeout_s} s")
            time.sleep(0.05)

    def wait_processing(self, key_part: str, timeout_s: float = 60) -> str:
        """The name of the worker running the task whose key contains ``key_part`` (waits for it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for addr, keys in self.client.processing().items():
                if any(key_part in str(k) for k in keys):
                    return next(n for n, w in self.cluster.workers.items() if w.address == addr)
            time.sleep(0.05)
        raise TimeoutError(f"no worker started {key_part} within {timeout_s} s")

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


@pytest.fixture
def fleet():
    pytest.importorskip("distributed", reason=NEEDS)
    f = Fleet()
    yield f
    f.close()
