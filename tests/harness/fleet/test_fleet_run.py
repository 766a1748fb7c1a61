"""A run across a fleet of 8 fake boards in an in-process Dask cluster: routing, one merged store, faults."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from harness.bench.runner import run_benchmark
from tests.harness.fleet.conftest import BOARDS, NEEDS, board_profile, run_options

pytest.importorskip("distributed", reason=NEEDS)
from harness.fleet.launcher import DaskLauncher  # noqa: E402

#: Fields of a record that do not depend on where or when the job ran.
STABLE = ("job_id", "device", "backend", "precision", "checkpoint", "checkpoint_sha256", "status", "eval_samples",
          "top1", "top1_agreement", "logit_mse", "warmup_iters", "timed_iters", "runs", "raw_latency_file")


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]


def test_eight_boards_each_job_on_its_worker_and_store_equals_eight_local_runs(tmp_path, tiny_model, fleet):
    profiles = [board_profile(tmp_path, b) for b in BOARDS]
    for b in BOARDS:
        fleet.add(b)
    launcher = DaskLauncher(fleet.client)
    # No validation budget: under load a budget cuts a pass at a different image on each side, and the records
    # would differ by host load rather than by where the job ran.
    merged = run_benchmark(run_options(tmp_path, tiny_model, tuple(profiles), validate_budget_s=None),
                           launcher=launcher)

    records = _records(merged.run_dir)
    assert sorted(r["device"] for r in records) == sorted(BOARDS)
    assert all(r["extra"]["fleet_worker"] == f"w-{r['device']}" for r in records)
    assert all((merged.run_dir / "latencies" / r["raw_latency_file"]).is_file() for r in records)
    local = {}
    for b, profile in zip(BOARDS, profiles):
        opts = run_options(tmp_path, tiny_model, (profile,), results=f"local-{b}", validate_budget_s=None)
        for r in _records(run_benchmark(opts).run_dir):
            local[r["job_id"]] = r
    assert sorted(local) == sorted(r["job_id"] for r in records)
    differing = {r["job_id"]: {k: (r[k], local[r["job_id"]][k]) for k in STABLE if r[k] != local[r["job_id"]][k]}
                 for r in records}
    assert not any(differing.values()), f"fleet vs local record fields (fleet, local): {differing}"


def test_measured_on_names_the_worker_host_and_manifest_lists_the_workers(tmp_path, tiny_model, fleet):
    import platform

    fleet.add("fake_rk3588")
    result = run_benchmark(run_options(tmp_path, tiny_model, (board_profile(tmp_path, "fake_rk3588"),)),
                           launcher=DaskLauncher(fleet.client))
    assert result.records[0].measured_on == f"fake_rk3588 ({platform.node()})"
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["fleet"]["workers"]["w-fake_rk3588"]["devices"] == ["fake_rk3588"]


def test_a_device_without_worker_is_unsupported_before_anything_is_submitted(tmp_path, tiny_model, fleet):
    fleet.add("fake_rk3588")
    launcher = DaskLauncher(fleet.client)
    devices = (board_profile(tmp_path, "fake_rk3588"), board_profile(tmp_path, "fake_jetson_orin"))
    result = run_benchmark(run_options(tmp_path, tiny_model, devices), launcher=launcher)
    first, second = _records(result.run_dir)
    assert first["device"] == "fake_jetson_orin" and first["status"] == "unsupported"
    assert "no worker for device fake_jetson_orin is connected" in first["error_message"]
    assert second["device"] == "fake_rk3588" and second["status"] == "ok"


def test_a_worker_of_another_harness_version_is_refused_with_both_versions(tmp_path, tiny_model, fleet):
    fleet.add("fake_rk3588")
    launcher = DaskLauncher(fleet.client, version="99.0-coordinator")
    record = run_benchmark(run_options(tmp_path, tiny_model, (board_profile(tmp_path, "fake_rk3588"),)),
                           launcher=launcher).records[0]
    assert record.status == "unsupported"
    worker_version = launcher.workers()[next(iter(launcher.workers()))].harness_version
    assert "99.0-coordinator" in record.error_message and worker_version in record.error_message


def test_killing_a_worker_mid_run_loses_no_record(tmp_path, tiny_model, fleet):
    profiles = [board_profile(tmp_path, b, ("fake-slow",) if b == "fake_rk3588" else ("onnxruntime",))
                for b in BOARDS]
    for b in BOARDS:
        fleet.add(b)
    # scatter_timeout_s: a file sent while the killer strikes can wait on the dead worker for good (Dask's scheduler
    # keeps replicating to it); bounded, so that race fails in ~35 s instead of hanging the suite.
    launcher = DaskLauncher(fleet.client, poll_s=0.2, orphan_grace_s=1.0, scatter_timeout_s=10.0)
    # The kill strikes once every job is out (files sent): a transfer to a worker dying mid-receive is the
    # launcher's bounded TimeoutError (test_a_worker_that_never_answers_...), not what this test checks.
    killer = threading.Thread(target=lambda: fleet.wait_submitted(len(BOARDS)) or fleet.kill(
        fleet.wait_processing("fake-slow")))
    killer.start()
    result = run_benchmark(run_options(tmp_path, tiny_model, tuple(profiles), backend_options=(("fake_sleep_s", 10),)),
                           launcher=launcher)
    killer.join()
    by_device = {r["device"]: r for r in _records(result.run_dir)}
    assert sorted(by_device) == sorted(BOARDS)
    assert by_device["fake_rk3588"]["status"] == "crashed"
    assert "no worker for device fake_rk3588" in by_device["fake_rk3588"]["error_message"]
    assert all(r["status"] == "ok" for d, r in by_device.items() if d != "fake_rk3588")


def test_a_job_the_scheduler_cancels_after_its_last_worker_died_is_a_crashed_record(tmp_path, tiny_model, fleet):
    """The once-flaky path made deterministic: the scheduler forgets the task of a dead board ("already
    forgotten") before the orphan grace expires; distributed's wait() then raises on the cancelled future."""
    fleet.add("fake_rk3588")
    launcher = DaskLauncher(fleet.client, poll_s=0.2, orphan_grace_s=600.0, scatter_timeout_s=10.0)

    def kill_then_forget():
        fleet.kill(fleet.wait_processing("fake-slow"))
        for future, _, _ in list(launcher._pending.values()):
            future.cancel()   # what the scheduler's forgetting does to the coordinator's future

    killer = threading.Thread(target=kill_then_forget)
    killer.start()
    profile = board_profile(tmp_path, "fake_rk3588", ("fake-slow",))
    result = run_benchmark(run_options(tmp_path, tiny_model, (profile,), backend_options=(("fake_sleep_s", 30),)),
                           launcher=launcher)
    killer.join()
    (record,) = _records(result.run_dir)
    assert record["status"] == "crashed"
    assert record["error_message"].startswith("no worker for device fake_rk3588 is connected any more")


def test_a_job_whose_worker_dies_is_retried_on_another_worker_of_its_device(tmp_path, tiny_model, fleet):
    fleet.add("fake_rk3588", "rk-a")
    fleet.add("fake_rk3588", "rk-b")
    launcher = DaskLauncher(fleet.client, poll_s=0.2, scatter_timeout_s=10.0)
    first = []
    killer = threading.Thread(target=lambda: first.append(fleet.wait_processing("fake-slow")) or fleet.kill(first[0]))
    killer.start()
    profile = board_profile(tmp_path, "fake_rk3588", ("fake-slow",))
    record = run_benchmark(run_options(tmp_path, tiny_model, (profile,), backend_options=(("fake_sleep_s", 3),)),
                           launcher=launcher).records[0]
    killer.join()
    assert record.status == "ok"
    assert record.extra["fleet_worker"] == ({"rk-a", "rk-b"} - set(first)).pop()


def test_a_killed_coordinator_is_resumed_without_rerunning_finished_jobs(tmp_path, tiny_model, fleet):
    import os
    import signal
    import subprocess
    import sys
    import time

    boards = BOARDS[:3]
    for b in boards:
        fleet.add(b)
    profiles = [board_profile(tmp_path, b, ("fake-slow",) if b == boards[2] else ("onnxruntime",)) for b in boards]
    root = Path(__file__).resolve().parents[3]
    common = ["--device", ",".join(profiles), "--checkpoint", str(tiny_model), "--plugin", "tests.fakes.backends",
              "--warmup", "1", "--iters", "5", "--runs", "1", "--eval-samples", "16", "--calib-samples", "8",
              "--bundled-data", "--results", str(tmp_path / "results")]
    coordinator = subprocess.Popen([sys.executable, "-m", "harness", "run", "--cluster",
                                    fleet.cluster.scheduler_address, "--run-id", "r1", "--backend-option",
                                    "fake_sleep_s=8", *common], cwd=root, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(root)})
    records = tmp_path / "results" / "r1" / "records.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not records.exists() or len(records.read_text().splitlines()) < 2):
        time.sleep(0.1)
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    finished = [r["job_id"] for r in _records(records.parent)]
    assert len(finished) == 2
    again = DaskLauncher(fleet.client)
    resumed = run_benchmark(run_options(tmp_path, tiny_model, tuple(profiles), run_id="r1", resume=True,
                                        backend_options=(("fake_sleep_s", 0.1),)), launcher=again)
    assert [t["job_id"] for t in again.timings] == [r.job_id for r in resumed.records]
    assert not set(finished) & {t["job_id"] for t in again.timings}
    assert sorted(r["device"] for r in _records(records.parent)) == sorted(boards)


def test_files_travel_by_content_hash_and_are_written_once_per_worker(tmp_path, tiny_model, fleet):
    for b in ("fake_rk3588", "fake_jetson_orin"):
        fleet.add(b)
    launcher = DaskLauncher(fleet.client)
    devices = tuple(board_profile(tmp_path, b, ("onnxruntime", "fake-raise")) for b in ("fake_rk3588",
                                                                                         "fake_jetson_orin"))
    run_benchmark(run_options(tmp_path, tiny_model, devices), launcher=launcher)
    # 4 jobs: checkpoint, data and reference are shared (one key each), plus one profile per device
    assert len(launcher.scattered_keys) == 5
    for name, worker in fleet.cluster.workers.items():
        root = Path(worker.local_directory) / "harness-fleet"
        blobs = sorted(p.suffix for p in (root / "blobs").glob("*/*"))
        assert blobs == [".npz", ".npz", ".toml"]   # data, reference, this worker's profile
        assert [p.name for p in (root / "models").glob("*/*")] == ["tiny.onnx"]


def test_a_worker_that_never_answers_a_file_transfer_fails_the_run_instead_of_hanging(tmp_path, tiny_model, fleet):
    """The hang once seen when a worker was killed mid-scatter: Dask's scatter waits for its answer forever."""
    import asyncio

    from distributed import Worker

    class Unanswering(Worker):
        async def update_data(self, data, stimulus_id=None):   # the scheduler's scatter lands here
            await asyncio.Event().wait()

    fleet.add("fake_rk3588", cls=Unanswering)
    launcher = DaskLauncher(fleet.client, scatter_timeout_s=1.0)
    with pytest.raises(TimeoutError, match="did not finish within 1 s, three times"):
        run_benchmark(run_options(tmp_path, tiny_model, (board_profile(tmp_path, "fake_rk3588"),)), launcher=launcher)
