"""Benchmark: load, compare and plot over 10,000 synthetic records (target: < 5 s), with peak memory.

    python benchmarks/bench_compare_plot.py [--records 10000] [--runs 20] [--keep DIR]

The records are synthetic (written through JobRecord, like the store writes them) so the benchmark needs no
device; they exercise every table and the three store-based figures (PNG written to a temp folder).
Wall and CPU time of a first pass are printed (on a shared machine the wall time moves with other load;
the CPU time does not). Timings come from a first pass without tracemalloc (it slows allocation-heavy code); peak Python heap comes
from a second, traced pass, and the process's peak RSS from resource.getrusage.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.store.records import JobRecord  # noqa: E402

DEVICES = {  # device -> (backends, precisions, typical fps at fp32, typical power W)
    "cpu": (("onnxruntime", "openvino", "tvm"), ("fp32", "int8", "int8-dynamic"), 900.0, None),
    "jetson_orin": (("tensorrt", "onnxruntime-cuda", "onnxruntime-tensorrt"), ("fp32", "fp16", "int8"), 1500.0, 25.0),
    "rk3588": (("rknn", "onnxruntime"), ("fp16", "int8"), 300.0, 6.0),
    "hardware_a": (("emulated",), ("int8",), 700.0, 4.0),
    "desktop_gpu": (("tensorrt", "onnxruntime-cuda"), ("fp32", "fp16", "int8"), 4000.0, 190.0),
}
MODELS = ("resnet20-fmnist", "resnet50-imagenet", "dinov2-cifar100", "mobilenetv3-cifar10", "unet-coco")


def synth_records(n: int, runs: int, seed: int = 0) -> dict[str, list[dict]]:
    rng = np.random.default_rng(seed)
    combos = [(d, b, p, m, r) for d, (bs, ps, _, _) in DEVICES.items() for b in bs for p in ps for m in MODELS
              for r in ("map", "quanttrim")]
    out: dict[str, list[dict]] = {f"run-{i:03d}": [] for i in range(runs)}
    run_ids = list(out)
    for i in range(n):
        d, b, p, m, r = combos[i % len(combos)]
        _, _, fps0, watts = DEVICES[d]
        fps = fps0 * {"fp32": 1.0, "fp16": 2.0, "int8": 3.0, "int8-dynamic": 1.5}[p] * rng.uniform(0.7, 1.3)
        p50 = 1000.0 / fps
        status = "ok" if rng.random() > 0.05 else "failed"
        fields = {}
        if status == "ok":
            fields = dict(latency_ms_p50=p50, latency_ms_p90=p50 * 1.1, latency_ms_p95=p50 * 1.2,
                          latency_ms_p99=p50 * 1.5, latency_ms_mean=p50 * 1.05, latency_ms_min=p50 * 0.9,
                          latency_ms_max=p50 * 3, fps=fps, top1=0.9 - rng.uniform(0, 0.05 if r == "map" else 0.02),
                          logit_mse=rng.lognormal(-3 if r == "map" else -3.5, 0.5), snr_db=rng.uniform(15, 40),
                          ece=rng.uniform(0, 0.05), brier=rng.uniform(0.1, 0.2), batch_size=1)
            if watts is not None:
                peak = watts * rng.uniform(0.9, 1.2)
                fields.update(power_avg_w=peak * 0.8, power_peak_w=peak * 1.05, power_peak_w_mean=peak,
                              power_p5_w=peak * 0.7, power_p95_w=peak * 1.02,
                              energy_per_inference_mj=1000 * peak * 0.8 / fps, power_source="hwmon")
            else:
                fields.update(power_unavailable_reason="no power source on this host")
        else:
            fields = dict(failed_stage="compile", error_message="synthetic failure")
        run_id = run_ids[i % runs]
        rec = JobRecord(run_id=run_id, job_id=f"j{i}", device=d, backend=b, precision=p,
                        checkpoint=f"{m}-{r}", status=status, calibration_method="minmax" if "int8" in p else None,
                        **fields)
        out[run_id].append(rec.to_dict())
    return out


def write_store(root: Path, runs: dict[str, list[dict]]) -> None:
    for run_id, recs in runs.items():
        d = root / run_id
        d.mkdir(parents=True)
        (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (d / "manifest.json").write_text(json.dumps({"run_id": run_id, "command": "synthetic"}))


def workload(root: Path, out_dir: Path) -> dict[str, float]:
    from harness.analysis.compare import build_tables, render
    from harness.analysis.figures import make_plots
    from harness.store.reader import load_store

    t = {}
    c0 = time.process_time()
    t0 = time.perf_counter()
    store = load_store(root)
    t["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tables = build_tables(store.records)
    render(tables, "csv")
    t["compare"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    written, skipped = make_plots(store, ["power-throughput", "accuracy-throughput", "latency"], out_dir,
                                  formats=("png",))
    t["plot"] = time.perf_counter() - t0
    t["cpu"] = time.process_time() - c0
    if skipped:
        raise RuntimeError(f"figures skipped: {skipped}")
    t["rows"] = float(len(store.records))
    t["main_rows"] = float(len(tables["main"]))
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--keep", type=Path, default=None, help="write the synthetic store and figures here")
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-compare-"))
    store_dir, fig_dir = base / "results", base / "figures"
    write_store(store_dir, synth_records(args.records, args.runs))
    import matplotlib  # noqa: F401 - import cost is not part of the workload
    import pandas  # noqa: F401

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = workload(store_dir, fig_dir)
    total = t["load"] + t["compare"] + t["plot"]
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    workload(store_dir, fig_dir)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"records: {int(t['rows'])} in {args.runs} runs; comparison rows: {int(t['main_rows'])}")
    print(f"load {t['load']:.2f} s | compare (3 tables + CSV) {t['compare']:.2f} s | "
          f"plot (3 figures, PNG) {t['plot']:.2f} s | total {total:.2f} s (target < 5 s: "
          f"{'PASS' if total < 5 else 'FAIL'}); CPU time {t['cpu']:.2f} s, 1-min load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall time grows with other load)")
    print(f"peak Python heap (tracemalloc, 2nd pass): {peak / 2**20:.1f} MiB; process peak RSS: {rss1 / 1024:.0f} MiB "
          f"(+{(rss1 - rss0) / 1024:.0f} MiB during the timed pass)")
    print(f"figures: {fig_dir}")
    return 0 if total < 5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
