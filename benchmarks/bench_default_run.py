"""The default run (`python -m harness run`, the bundled demo, every CPU backend installed), cold then warm, and
where each job's time goes.

Cold: a fresh results folder (no compiled artifacts, no FP32 reference, no validation outputs) and a fresh HOME
(the backends' own environments, e.g. the LiteRT converter, stay where they are installed: they are not a cache).
Warm: the same command again in the same results folder. Each run reports wall seconds, CPU seconds (user + sys of
the run and every job process it waited for: the honest figure on a shared host) and the load average before and
after. Then, per job, the wall seconds of each worker stage from the records (``extra.stage_s``: startup = the
child's interpreter start and imports, prepare, compile, model_facts, load, warmup, measure, validate, score) and
the launcher's overhead (the record's ``duration_s`` less the stages); ``cpu s`` is the worker's user + sys CPU
seconds (``extra.worker_cpu_s``, from wait4) where the record has it. Last, how many validation passes were
complete or cut by the budget, and how many of each were served whole from the outputs cache, resumed from the
prefix an earlier run left, or computed fresh (a budget-cut pass is resumed by the next run in the folder).

Usage: python benchmarks/bench_default_run.py [--results DIR] [--runs cold,warm] [--nice 10] [-- RUN ARGS...]
       python benchmarks/bench_default_run.py --analyze RUN_DIR      (the breakdown of an existing run)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
#: Stage names in display order; steps a record lacks print as "-".
STAGES = ("startup", "prepare", "compile", "model_facts", "load", "warmup", "measure", "validate", "score")


def timed_run(results: Path, run_id: str, home: Path, nice: int, extra: list[str]) -> dict:
    """Run the default run once; wall, CPU seconds (this child and everything it waited for) and load average."""
    from backends.environments import ENV_ROOT_VARIABLE, env_root

    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env[ENV_ROOT_VARIABLE] = str(env_root())   # the backends' own environments are installed, not a cache
    cmd = ["nice", "-n", str(nice), sys.executable, "-m", "harness", "run", "--results", str(results),
           "--run-id", run_id, *extra]
    load0 = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tempfile.gettempdir(), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
    return {"run_id": run_id, "rc": proc.returncode, "wall_s": wall, "cpu_s": cpu, "load_before": load0,
            "load_after": os.getloadavg(), "tail": tail, "run_dir": results / run_id}


def breakdown(run_dir: Path) -> None:
    """Per job: duration and the worker's stage seconds; then the totals per stage over the run."""
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines() if line.strip()]
    totals: dict[str, float] = defaultdict(float)
    print(f"{'job':<58} {'status':<11} {'dur s':>6} {'cpu s':>6} " + " ".join(f"{s[:8]:>8}" for s in STAGES)
          + f" {'other':>6}")
    for r in records:
        stages = (r.get("extra") or {}).get("stage_s") or {}
        dur = float(r.get("duration_s") or 0.0)
        other = dur - sum(stages.values()) if stages else None
        totals["duration"] += dur
        cpu = (r.get("extra") or {}).get("worker_cpu_s")
        totals["cpu"] += cpu or 0.0
        for k, v in stages.items():
            totals[k] += v
        if other is not None:
            totals["other"] += other
        cells = " ".join(f"{stages[s]:>8.2f}" if s in stages else f"{'-':>8}" for s in STAGES)
        fact = (r.get("extra") or {}).get("validation_reused")
        reused = f" (validation: {fact.get('samples_reused')} reused, {fact.get('samples_computed', 0)} computed)" \
            if fact else ""
        cpu_text = f"{cpu:>6.1f}" if cpu is not None else f"{'-':>6}"
        print(f"{r['job_id'][:58]:<58} {r['status']:<11} {dur:>6.1f} {cpu_text} {cells} "
              f"{other if other is not None else float('nan'):>6.2f}{reused}")
    print(f"{'total':<58} {len(records):<11} {totals['duration']:>6.1f} {totals['cpu']:>6.1f} "
          + " ".join(f"{totals.get(s, 0.0):>8.1f}" for s in STAGES) + f" {totals.get('other', 0.0):>6.1f}")
    print(validation_passes(records))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for j in manifest.get("left_out") or ():
        print(f"left out: {j['job_id']}: {j['reason']}")


def validation_passes(records: list[dict]) -> str:
    """How many of the run's validation passes were complete or cut by the budget (``validation_note``), and of
    each how many were served whole from the outputs cache, resumed from a stored prefix, or computed fresh."""
    kinds: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        if r.get("status") != "ok" or r.get("eval_samples") is None:
            continue
        extra = r.get("extra") or {}
        fact = extra.get("validation_reused")
        how = "fresh" if not fact else ("served" if not fact.get("samples_computed") else "resumed")
        kinds[("partial" if extra.get("validation_note") else "complete", how)] += 1
    parts = []
    for state in ("complete", "partial"):
        n = sum(v for (s, _), v in kinds.items() if s == state)
        detail = ", ".join(f"{kinds[(state, h)]} {h}" for h in ("served", "resumed", "fresh") if kinds[(state, h)])
        parts.append(f"{n} {state}" + (f" ({detail})" if detail else ""))
    return "validation passes: " + "; ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=None, help="results folder (default: a new temp folder)")
    ap.add_argument("--runs", default="cold,warm", help="run ids, in order, in the same results folder")
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--analyze", type=Path, default=None, help="only print the breakdown of this run folder")
    ap.add_argument("run_args", nargs=argparse.REMAINDER, help="after --: extra `harness run` arguments")
    args = ap.parse_args()
    if args.analyze:
        breakdown(args.analyze)
        return 0
    results = args.results or Path(tempfile.mkdtemp(prefix="bench-default-run-"))
    home = results / "home"   # fresh: no user caches
    home.mkdir(parents=True, exist_ok=True)
    extra = [a for a in args.run_args if a != "--"]
    for run_id in args.runs.split(","):
        out = timed_run(results, run_id, home, args.nice, extra)
        l0, l1 = out["load_before"], out["load_after"]
        print(f"== {run_id}: wall {out['wall_s']:.1f} s, CPU {out['cpu_s']:.1f} s (user+sys, job processes "
              f"included), load average {l0[0]:.1f}/{l0[1]:.1f}/{l0[2]:.1f} before, "
              f"{l1[0]:.1f}/{l1[1]:.1f}/{l1[2]:.1f} after, {os.cpu_count()} CPUs, exit {out['rc']}")
        if out["rc"] != 0 or not (out["run_dir"] / "records.jsonl").exists():
            print("\n".join(out["tail"]))
            continue
        breakdown(out["run_dir"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
