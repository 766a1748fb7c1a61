"""Reproduction studies with one shared runs folder vs one runs folder per study (issue 19: the quick preset on 2 cores).

Trains and exports the preset's first model once (MAP + Quant-Trim, its first seed), then measures the same studies
(calibration draws × granularities, in the reproduction's order) twice, each time in a fresh folder: the earlier
layout (each study's runs, and so the harness's caches, in ``out/fidelity/<tag>/runs``) and the shared one
(``out/fidelity/runs``, what ``python -m quanttrim reproduce`` does now). Per study it prints the wall time, the sum of
the records' ``duration_s`` (the job time: compile + load + validation, in the worker's child), the records served
a cached artifact (``compile_cached``) and a stored validation pass (``extra.validation_reused``), and the FP32
references in the cache. Run it niced on a shared host; it prints the load average before and after.

Measured 2026-11-29 (2 shared cores, load 2-3.7 from other work; --preset ci --draws 0,1 --granularities
per_tensor,per_channel --devices cpu,jetson_orin: ORT, OpenVINO, TVM, LiteRT + the Jetson Orin emulated policies, 38
jobs per study): job time per study (sum of duration_s) per-study layout 190 / 165 / 162 / 181 s; shared 183 / 74
(d0 per-channel) / 120 (d1 per-tensor) / 72 s (d1 per-channel); wall of the 4 studies 731 s -> 481 s. The second draw
still compiles and validates every calibrated INT8 job (100 s of its 120 s); one FP32 reference per checkpoint.

Usage: nice -n 19 python benchmarks/bench_shared_runs.py [--preset ci] [--draws 0,1] [--granularities per_tensor]
       [--devices cpu,jetson_orin] [--backends onnxruntime,openvino] [--eval-samples N] [--work DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t for t in text.split(",") if t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ci")
    p.add_argument("--draws", type=lambda t: tuple(int(x) for x in _csv(t)), default=(0, 1))
    p.add_argument("--granularities", type=_csv, default=("per_tensor",))
    p.add_argument("--devices", type=_csv, default=None, help="default: the preset's")
    p.add_argument("--backends", type=_csv, default=None, help="default: every available real backend")
    p.add_argument("--eval-samples", type=int, default=None, help="default: the preset's")
    p.add_argument("--work", type=Path, default=None, help="folder for the checkpoints and both layouts (kept)")
    args = p.parse_args()

    from quanttrim.reproduction import pipeline
    from quanttrim.reproduction.config import get_preset

    cfg = get_preset(args.preset).with_overrides(calib_draws=args.draws, granularities=args.granularities,
                                                 devices=args.devices, backends=args.backends,
                                                 eval_samples=args.eval_samples)
    spec, seed = cfg.models[0], cfg.seeds[0]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-shared-runs-"))
    print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}; work folder: {work}")
    print(f"preset {cfg.name}: {spec.name} w{spec.width:g} seed {seed}, draws {cfg.calib_draws}, granularities "
          f"{cfg.granularities}, devices {cfg.devices}, backends {cfg.backends or 'all available'}, "
          f"{cfg.eval_samples} evaluation images, threads {cfg.threads}")
    t0 = time.perf_counter()
    ckpts = tuple(pipeline.train_and_export(cfg, spec, r, seed, work, log=lambda m: None) for r in spec.recipes)
    print(f"trained and exported {len(ckpts)} checkpoints in {time.perf_counter() - t0:.0f} s")

    summary = {}
    for layout in ("per-study", "shared"):
        out = work / layout
        rows = []
        for draw in cfg.calib_draws:
            for gran in cfg.granularities:
                tag = pipeline.study_tag(spec, seed, draw, gran)
                opts = pipeline.fidelity_options(cfg, ckpts, draw, gran, out, tag)
                if layout == "per-study":
                    opts = dataclasses.replace(opts, runs_dir=out / "fidelity" / tag / "runs")
                rows.append(_study(opts, tag))
        summary[layout] = rows
        print(f"\n{layout} runs folders ({out}):")
        print(f"{'study':<34} {'wall_s':>7} {'job_s':>7} {'jobs':>5} {'ok':>4} {'art_cached':>10} "
              f"{'val_reused':>10} {'refs':>5}")
        for r in rows:
            print(f"{r['tag']:<34} {r['wall_s']:>7.1f} {r['job_s']:>7.1f} {r['jobs']:>5} {r['ok']:>4} "
                  f"{r['compile_cached']:>10} {r['validation_reused']:>10} {r['references']:>5}")
    print("\njob time of each later study as % of the first (per-study -> shared):")
    for i in range(1, len(summary["shared"])):
        old, new = summary["per-study"], summary["shared"]
        print(f"  {new[i]['tag']}: {100 * old[i]['job_s'] / old[0]['job_s']:.0f} % -> "
              f"{100 * new[i]['job_s'] / new[0]['job_s']:.0f} % (wall {100 * old[i]['wall_s'] / old[0]['wall_s']:.0f} "
              f"% -> {100 * new[i]['wall_s'] / new[0]['wall_s']:.0f} %)")
    total = {k: sum(r["wall_s"] for r in v) for k, v in summary.items()}
    print(f"all studies, wall: per-study {total['per-study']:.0f} s, shared {total['shared']:.0f} s")
    print(f"load average after: {os.getloadavg()}")
    (work / "bench_shared_runs.json").write_text(json.dumps(summary, indent=1))
    return 0


def _study(opts, tag: str) -> dict:
    from harness.analysis.fidelity import run_fidelity, runs_dir_of
    from harness.store.layout import RECORDS_FILE

    t0 = time.perf_counter()
    run_fidelity(opts)
    wall = time.perf_counter() - t0
    runs = runs_dir_of(opts)
    records = [json.loads(line) for run in sorted(runs.glob(f"{tag}-[0-9][0-9]-*"))
               for line in (run / RECORDS_FILE).read_text().splitlines() if line.strip()]
    return {"tag": tag, "wall_s": wall, "job_s": sum(r.get("duration_s") or 0.0 for r in records),
            "jobs": len(records), "ok": sum(r.get("status") == "ok" for r in records),
            "compile_cached": sum(bool(r.get("compile_cached")) for r in records),
            "validation_reused": sum("validation_reused" in (r.get("extra") or {}) for r in records),
            "references": len(list((runs / ".cache" / "references").glob("*.npz")))}


if __name__ == "__main__":
    raise SystemExit(main())
