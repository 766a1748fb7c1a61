"""Share MetaSchedule schedules between sibling TVM tasks: one convolution, different fused epilogues.

Why: FuseOps makes ResNet-20's 3x3 conv of one stage two tasks (``fused_conv2d1_add_relu`` and
``fused_conv2d1_add_add1_relu``: with and without the residual add), tuned separately. With 16 trials each on a
busy 2-core host, one of each pair kept a schedule ~2x slower than its sibling's (per-kernel profile of the
bundled model: 0.080 vs 0.039 ms per call). This replays each sibling's best trace on the task (epilogue blocks
the sibling lacks are inlined first; blocks it has that the task lacks are skipped), checks the output equals the
task's own schedule's, times both here in alternation (1 thread, median of 5x5 runs of 50 calls) and keeps the
faster: one record per workload in the destination database (run_secs: this measurement where re-measured).

Usage (regenerating the bundled entry, see harness/assets/tvm-tuning/README.md): ENTRY is a tuning entry folder
(``python -m harness tvm-db list`` names them); the result is an entry of the same name under DEST_ROOT.
  python benchmarks/tvm_share_schedules.py ENTRY DEST_ROOT [--model PATH]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import artifact, bench_model  # noqa: E402

def _time_s(funcs: list[Any], args: list[Any], rounds: int = 5) -> list[float]:
    import tvm

    times: list[list[float]] = [[] for _ in funcs]
    for _ in range(rounds):   # alternating: load drift on a shared host hits every candidate
        for k, f in enumerate(funcs):
            times[k].append(float(np.median(f.time_evaluator("main", tvm.cpu(), number=50, repeat=5)(*args).results)))
    return [float(np.median(t)) for t in times]


def share(src: Path, dest: Path, model_path: Path | None) -> None:
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.schedule import Schedule

    from backends import tvm_backend as tb
    from backends.tvm_tuning import extract_tasks, replay_sibling_trace, sibling_groups

    tvm.get_global_func("runtime.config_threadpool")(1, 1)
    model = artifact(bench_model(str(model_path) if model_path else None, Path(dest).parent))
    target = tvm.target.Target(tb.host_target())
    mod = tb.TvmBackend._import(Path(model.path), model, 1, tb.TvmOptions().conv_layout)
    tasks = {t.task_name: t.dispatched[0] for t in extract_tasks(tb._fused(mod, target), target, None)}
    db = ms.database.JSONDatabase(work_dir=str(src))

    def best(name: str) -> Any:
        return db.get_top_k(db.commit_workload(tasks[name]), 1)[0]

    chosen: dict[str, tuple[float, Any, str]] = {}
    for group in sibling_groups([n for n in tasks if db.has_workload(tasks[n])]).values():
        for name in group:
            own = Schedule(tasks[name])
            best(name).trace.apply_to_schedule(own, remove_postproc=False)
            candidates = [(own, "own")]
            for sib in group:
                if sib != name:
                    try:
                        candidates.append((replay_sibling_trace(tasks[name], best(sib).trace, tasks[sib]), f"from {sib}"))
                    except Exception as exc:  # a trace that does not fit: the task keeps its own schedule
                        print(f"{name}: {sib}'s schedule does not apply ({str(exc).splitlines()[0][:120]})")
            funcs = [tvm.compile(sch.mod, target=target).mod for sch, _ in candidates]
            infos = ms.arg_info.ArgInfo.from_prim_func(tasks[name]["main"])
            rng = np.random.default_rng(0)
            args = [tvm.runtime.tensor(rng.random([int(d) for d in a.shape]).astype(str(a.dtype))) for a in infos]
            outs = []
            for f in funcs:
                fresh = [tvm.runtime.tensor(a.numpy()) for a in args]
                f["main"](*fresh)
                outs.append(fresh[-1].numpy())
            secs = _time_s(funcs, args)
            ok = [np.allclose(o, outs[0], rtol=1e-4, atol=1e-5) for o in outs]
            k = min((i for i in range(len(funcs)) if ok[i]), key=lambda i: secs[i])
            timed = [f"{how} {s * 1e6:.1f} us{'' if good else ' (other output: refused)'}"
                     for (_, how), s, good in zip(candidates, secs, ok)]
            print(f"{name}: {', '.join(timed)} -> {candidates[k][1]}")
            chosen[name] = (secs[k], candidates[k][0], candidates[k][1])
    dest.mkdir(parents=True, exist_ok=True)
    out = ms.database.JSONDatabase(work_dir=str(dest))
    for name, task_mod in tasks.items():
        if not db.has_workload(task_mod):
            continue
        if name in chosen:
            rec = ms.database.TuningRecord(chosen[name][1].trace, out.commit_workload(task_mod), [chosen[name][0]],
                                           target, ms.arg_info.ArgInfo.from_prim_func(task_mod["main"]))
        else:
            old = best(name)
            rec = ms.database.TuningRecord(old.trace, out.commit_workload(task_mod), old.run_secs, target,
                                           old.args_info)
        out.commit_tuning_record(rec)   # one record per workload: no ranking against other loads' run_secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("entry", type=Path, help="a TVM tuning entry folder (entry.json + MetaSchedule database)")
    ap.add_argument("dest_root", type=Path, help="folder to write the new entry (same name) into")
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: the bundled ResNet-20)")
    args = ap.parse_args()
    from backends.tvm_tuning import TuningEntry

    entry = TuningEntry.read(args.entry)
    dest = args.dest_root / args.entry.name
    if dest.exists():
        print(f"{dest} exists: remove it or name another DEST_ROOT", file=sys.stderr)
        return 1
    share(args.entry, dest, args.model)
    TuningEntry(**{**entry.__dict__, "path": dest}).write()
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
