"""Coordinator overhead per job of a fleet run (submit -> record written, beyond the job's own time).

An in-process Dask cluster on loopback with 8 workers, each advertising one fake board (a host_cpu profile),
runs ``--rounds`` runs of 8 jobs (bundled MAP checkpoint, ONNX Runtime FP32, a short loop). Per job:
overhead = (record written - submitted) - the job's own time on its worker (the worker's child process,
host-load sample included). It holds scheduling, the file transfer (first job per worker), the result's way
back, the latency file and the record's fsync. Target: < 50 ms per job.

Run: python benchmarks/bench_fleet_overhead.py [--workers 8] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

TARGET_MS = 50.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=8, help="workers, one fake board each (default 8)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of one job per board (default 3)")
    args = ap.parse_args()

    from distributed import Client, LocalCluster, Worker

    from harness.bench.options import BenchmarkOptions
    from harness.bench.runner import run_benchmark
    from harness.fleet.launcher import DaskLauncher
    from harness.fleet.task import device_resource
    from harness.model.checkpoint import default_checkpoint_paths
    from harness.store.writer import RunStore

    written: dict[str, float] = {}
    append = RunStore.append

    def timed_append(self, record):  # the moment each record is on disk
        append(self, record)
        written[record.job_id] = time.time()

    RunStore.append = timed_append
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    boards = [f"bench_board{i}" for i in range(args.workers)]
    profiles = []
    for b in boards:
        path = tmp / f"{b}.toml"
        path.write_text(f'name = "{b}"\ndisplay_name = "fake {b}"\nform_factor = "host_cpu"\n'
                        'backends = ["onnxruntime"]\nprecisions = ["fp32"]\n')
        profiles.append(str(path))
    cluster = LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1", scheduler_port=0,
                           dashboard_address=None)
    for b in boards:
        cluster.worker_spec[f"w-{b}"] = {"cls": Worker, "options": {
            "nthreads": 1, "resources": {device_resource(b): 1}, "host": "127.0.0.1"}}
    cluster.scale(len(boards))
    client = Client(cluster, set_as_default=False)
    client.wait_for_workers(len(boards))
    checkpoint = str(default_checkpoint_paths()[0])
    overheads_ms: list[float] = []
    job_s: list[float] = []
    writing_ms: list[float] = []   # result in hand -> record on disk (latency file, record, fsync)
    dispatch_ms: list[float] = []  # submitted -> the task starts on its worker (scheduling, file transfer)
    task_ms: list[float] = []      # the task's own work around the job (files, profile, result JSON)
    back_ms: list[float] = []      # the task returns -> the coordinator holds the result
    try:
        for r in range(args.rounds):
            launcher = DaskLauncher(client)
            options = BenchmarkOptions(devices=tuple(profiles), checkpoints=(checkpoint,), warmup=2, iters=20,
                                       runs=1, eval_samples=32, calib_samples=8, results_dir=tmp / "results",
                                       run_id=f"round{r}", prefer_full_dataset=False, timeout_s=300)
            records = run_benchmark(options, launcher=launcher, info=lambda m: None).records
            bad = [f"{x.job_id}: {x.status} {x.error_message}" for x in records if x.status != "ok"]
            if bad:
                print("jobs failed:\n  " + "\n  ".join(bad))
                return 2
            for t in launcher.timings:
                overheads_ms.append((written[t["job_id"]] - t["submitted_epoch_s"] - t["job_s"]) * 1e3)
                writing_ms.append((written[t["job_id"]] - t["collected_epoch_s"]) * 1e3)
                dispatch_ms.append((t["task_started_epoch_s"] - t["submitted_epoch_s"]) * 1e3)
                task_ms.append((t["task_finished_epoch_s"] - t["task_started_epoch_s"] - t["job_s"]) * 1e3)
                back_ms.append((t["collected_epoch_s"] - t["task_finished_epoch_s"]) * 1e3)
                job_s.append(t["job_s"])
            print(f"round {r}: {len(records)} jobs, overhead ms per job: "
                  + ", ".join(f"{o:.1f}" for o in overheads_ms[-len(records):]))
    finally:
        client.close()
        cluster.close()
    overheads_ms.sort()
    med = statistics.median(overheads_ms)
    p90 = overheads_ms[min(len(overheads_ms) - 1, int(0.9 * len(overheads_ms)))]
    print(f"{len(overheads_ms)} jobs on {args.workers} workers; job's own time on its worker: median "
          f"{statistics.median(job_s):.2f} s")
    print(f"coordinator overhead per job (submit -> record written, beyond the job's own time): median {med:.1f} ms, "
          f"p90 {p90:.1f} ms, max {overheads_ms[-1]:.1f} ms (target < {TARGET_MS:.0f} ms)")
    m = statistics.median
    print(f"medians: submit -> task starts {m(dispatch_ms):.1f} ms; task's work around the job {m(task_ms):.1f} ms; "
          f"task returns -> result here {m(back_ms):.1f} ms; result -> record on disk {m(writing_ms):.1f} ms")
    try:
        import os

        print(f"host load (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (8 jobs share them)")
    except OSError:
        pass
    return 0 if med < TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
