"""TVM MetaSchedule tuning: a budget that reaches every task, and databases kept per (model structure, target).

Why per task: MetaSchedule's gradient task scheduler gives each task one round of ``num_trials_per_iter``
trials in turn, so a global budget of 32 trials in rounds of 8 reached 4 of 12 ResNet-20 tasks and left the
other 8 as naive loops. :func:`budget_plan` splits the budget evenly (``max_trials_per_task``) with one round per
task's share, so every task gets trials; :func:`tasks_reached` counts the tasks the database really covers.

The store: one folder per entry ``<root>/<structure16>-<target12>/`` holding MetaSchedule's JSON database
(``database_workload.json``, ``database_tuning_record.json``) and ``entry.json`` (what was tuned, for which
target, with what budget, how many tasks it reached). The model identity is :func:`structure_sha256`: the ONNX
graph with initializer *values* left out plus the static input shapes, because tuning records depend only on
shapes and operators — two checkpoints of one architecture (the bundled demo's MAP and Quant-Trim ResNet-20s)
share one entry. The target identity is the canonical JSON of TVM's target dict (kind, mcpu, num-cores, ...).

Entries export to a ``.tar.gz`` holding only each workload's best record (``Database.dump_pruned``: small
enough to ship) and import back; read-only seed folders (the harness's bundled pre-tuned databases) are
searched after the writable root.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import tarfile
import tempfile
import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

ENTRY_FORMAT = "quanttrim-tvm-tuning/1"
ENTRY_FILE = "entry.json"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
#: Largest round: more trials per round only cost memory in the builder pool.
MAX_TRIALS_PER_ROUND = 64
#: Evolutionary search per round: candidates sampled, and genetic iterations over them. MetaSchedule's defaults
#: (512, 4) took ~2 min of CPU per round on two busy cores before a single build; with tens of trials per task
#: the cost model cannot use that many, so a smaller search costs little quality for a small budget.
SEARCH_POPULATION = 128
SEARCH_GENETIC_ITERS = 2


def structure_sha256(onnx_path: Path | str, input_shapes: Mapping[str, Sequence[int]], variant: str = "") -> str:
    """sha256 (64 hex) of the ONNX graph without initializer values, plus the static input shapes, plus
    ``variant`` when not empty (how the graph is rewritten before tuning, e.g. the conv layout).

    Initializers keep their name, dtype and dims; Constant nodes are kept whole (they can carry shapes).
    Raises whatever ``onnx.load`` raises for an unreadable file.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    for init in model.graph.initializer:
        for f in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                  "string_data", "external_data"):
            init.ClearField(f)
        init.ClearField("data_location")
    model.graph.ClearField("doc_string")
    h = hashlib.sha256(model.graph.SerializeToString(deterministic=True))
    h.update(json.dumps({k: [int(d) for d in v] for k, v in sorted(input_shapes.items())}).encode())
    if variant:
        h.update(variant.encode())
    return h.hexdigest()


def target_key(target: Mapping[str, Any]) -> str:
    """The canonical JSON of a TVM target dict: the target half of an entry's identity."""
    return json.dumps(dict(target), sort_keys=True, separators=(",", ":"))


def entry_name(structure: str, target: Mapping[str, Any]) -> str:
    return f"{structure[:16]}-{hashlib.sha256(target_key(target).encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class BudgetPlan:
    """How a trial budget is spent: ``per_task`` trials for each of ``tasks`` tasks, ``per_round`` at a time."""

    tasks: int
    per_task: int
    per_round: int

    @property
    def global_trials(self) -> int:
        return self.tasks * self.per_task


def budget_plan(trials: int, tasks: int, per_task: int | None = None, per_round: int | None = None) -> BudgetPlan:
    """Split ``trials`` evenly over ``tasks`` (at least 1 each; ``per_task`` given overrides the split).

    One round per task's share (up to MAX_TRIALS_PER_ROUND) because each round restarts the builder pool
    (~15 s of imports per worker). Raises ValueError for a non-positive budget or task count.
    """
    if tasks < 1:
        raise ValueError("no tasks to tune")
    if per_task is None:
        if trials < 1:
            raise ValueError("the tuning budget must be >= 1 trial")
        per_task = max(1, math.ceil(trials / tasks))
    rnd = per_round or min(per_task, MAX_TRIALS_PER_ROUND)
    return BudgetPlan(tasks, int(per_task), int(rnd))


@dataclass(frozen=True)
class TuningEntry:
    """One tuned database: what it was tuned for and how far the budget went (``entry.json``)."""

    path: Path
    structure_sha256: str
    target: dict
    model_name: str
    trials: int
    trials_per_task: int
    tasks: int
    tasks_reached: int
    tuning_s: float
    tvm_version: str
    created: str
    ops: str = "all"
    #: Layout conv2d was tuned in (entries from before the option: NCHW).
    conv_layout: str = "NCHW"
    #: "cache" (the writable store) or the seed folder it was found in.
    source: str = "cache"

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    @classmethod
    def read(cls, folder: Path, source: str = "cache") -> "TuningEntry":
        """The entry in ``folder``; ValueError naming the folder when entry.json is missing or not this format."""
        meta_path = Path(folder) / ENTRY_FILE
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{folder} is not a TVM tuning entry ({meta_path.name}: {exc})") from None
        if meta.pop("format", None) != ENTRY_FORMAT:
            raise ValueError(f"{meta_path} is not {ENTRY_FORMAT}; re-export it with `python -m harness tvm-db export`")
        for f in (WORKLOADS, RECORDS):
            if not (Path(folder) / f).is_file():
                raise ValueError(f"{folder} lacks {f}: an incomplete tuning entry (tune again or re-import it)")
        known = {k: v for k, v in meta.items() if k in cls.__dataclass_fields__ and k not in ("path", "source")}
        return cls(path=Path(folder), source=source, **known)

    def write(self) -> None:
        d = self.describe()
        for k in ("path", "source"):
            d.pop(k)
        (self.path / ENTRY_FILE).write_text(json.dumps({"format": ENTRY_FORMAT, **d}, indent=1, sort_keys=True))


class TuningStore:
    """Tuning entries under a writable ``root``, then read-only ``seeds`` (searched in order)."""

    def __init__(self, root: Path | str, seeds: Sequence[Path | str] = ()) -> None:
        self.root = Path(root)
        self.seeds = tuple(Path(s) for s in seeds if str(s))

    def find(self, structure: str, target: Mapping[str, Any]) -> TuningEntry | None:
        """The entry for (structure, target): the writable root first, then each seed; None when none holds it."""
        name = entry_name(structure, target)
        for folder, source in [(self.root, "cache"), *[(s, str(s)) for s in self.seeds]]:
            candidate = folder / name
            if (candidate / ENTRY_FILE).is_file():
                entry = TuningEntry.read(candidate, source)
                if entry.structure_sha256 == structure and target_key(entry.target) == target_key(target):
                    return entry
        return None

    def entries(self) -> list[TuningEntry]:
        """Every readable entry in the root and the seeds (unreadable folders are skipped)."""
        out = []
        for folder, source in [(self.root, "cache"), *[(s, str(s)) for s in self.seeds]]:
            for sub in sorted(folder.glob(f"*/{ENTRY_FILE}")) if folder.is_dir() else ():
                try:
                    out.append(TuningEntry.read(sub.parent, source))
                except ValueError:
                    continue
        return out

    def export(self, archive: Path | str, entries: Sequence[TuningEntry] | None = None) -> list[TuningEntry]:
        """Write ``entries`` (default: all) to a .tar.gz, each pruned to its workloads' best records."""
        chosen = list(self.entries() if entries is None else entries)
        if not chosen:
            raise ValueError(f"no TVM tuning entries under {self.root} to export (tune first: "
                             "--backend-option tuning_trials=N)")
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive, "w:gz") as tar:
            for entry in chosen:
                staged = Path(tmp) / entry.path.name
                prune_database(entry.path, staged)
                TuningEntry(**{**entry.__dict__, "path": staged}).write()
                tar.add(staged, arcname=entry.path.name)
        return chosen

    def import_archive(self, archive: Path | str, replace: bool = False) -> list[tuple[TuningEntry, str]]:
        """Unpack an exported archive into the root: (entry, "imported" | "kept existing ...") per entry.

        An entry already in the root is kept unless ``replace`` or the imported one had a larger budget.
        """
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
            for meta in sorted(Path(tmp).glob(f"*/{ENTRY_FILE}")):
                new = TuningEntry.read(meta.parent)
                dest = self.root / entry_name(new.structure_sha256, new.target)
                old = TuningEntry.read(dest) if (dest / ENTRY_FILE).is_file() else None
                if old is not None and not replace and old.trials >= new.trials:
                    results.append((old, f"kept existing ({old.trials} trials >= {new.trials})"))
                    continue
                self.root.mkdir(parents=True, exist_ok=True)
                staging = self.root / f".{dest.name}.importing"
                shutil.rmtree(staging, ignore_errors=True)
                shutil.copytree(meta.parent, staging)
                shutil.rmtree(dest, ignore_errors=True)
                staging.replace(dest)
                results.append((TuningEntry.read(dest), "imported"))
        if not results:
            raise ValueError(f"{archive} holds no TVM tuning entries (make one with `python -m harness tvm-db export`)")
        return results


def prune_database(src: Path, dest: Path) -> None:
    """Copy the MetaSchedule JSON database in ``src`` to ``dest`` keeping each workload's best record."""
    from tvm.s_tir import meta_schedule as ms

    dest.mkdir(parents=True, exist_ok=True)
    for f in (WORKLOADS, RECORDS):
        (dest / f).unlink(missing_ok=True)
    ms.database.JSONDatabase(work_dir=str(src)).dump_pruned(ms.database.JSONDatabase(work_dir=str(dest)))


def extract_tasks(fused_mod: Any, target: Any, ops: Sequence[str] | None) -> list[Any]:
    """MetaSchedule's tasks of a fused relax module, those whose name holds one of ``ops`` (None: all), once each."""
    from tvm.s_tir import meta_schedule as ms

    tasks = ms.relax_integration.extract_tasks(fused_mod, target)
    return [t for t in tasks if ops is None or any(op in t.task_name for op in ops)]


def tasks_reached(db_dir: Path, tasks: Sequence[Any]) -> int:
    """How many of ``tasks`` have at least one measured record in the database in ``db_dir``."""
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(work_dir=str(db_dir))
    reached = 0
    for task in tasks:
        mod = task.dispatched[0]
        if db.has_workload(mod) and db.get_top_k(db.commit_workload(mod), 1):
            reached += 1
    return reached


def tune_tasks(tasks: Sequence[Any], target: Any, db_dir: Path, plan: BudgetPlan, builder: Any,
               runner: Any) -> float:
    """Tune ``tasks`` into the JSON database in ``db_dir`` with ``plan``'s per-task budget; returns seconds."""
    from tvm.s_tir import meta_schedule as ms

    db_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    strategy = ms.search_strategy.EvolutionarySearch(population_size=SEARCH_POPULATION,
                                                     init_min_unmeasured=min(50, SEARCH_POPULATION // 2),
                                                     genetic_num_iters=SEARCH_GENETIC_ITERS)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(list(tasks), work_dir=str(db_dir),
                                                                               strategy=strategy)
    ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(db_dir),
                  max_trials_global=plan.global_trials, max_trials_per_task=plan.per_task,
                  num_trials_per_iter=plan.per_round, builder=builder, runner=runner,
                  database=ms.database.JSONDatabase(work_dir=str(db_dir)))
    return time.perf_counter() - t0


_CONV_ANCHOR = re.compile(r"^fused_(conv2d\d*)_")


def sibling_groups(task_names: list[str]) -> dict[str, list[str]]:
    """Task names grouped by the convolution they fuse ('fused_conv2d1_add_relu' -> 'conv2d1'); groups of 2+."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in task_names:
        m = _CONV_ANCHOR.match(name)
        if m:
            groups[m.group(1)].append(name)
    return {k: v for k, v in groups.items() if len(v) > 1}


def _blocks(mod: Any) -> set[str]:
    return set(re.findall(r'T\.sblock\("([^"]+)"\)', mod.script()))


def replay_sibling_trace(task_mod: Any, sibling_trace: Any, sibling_mod: Any) -> Any:
    """A schedule of ``task_mod`` following ``sibling_trace`` (the best trace of a sibling task, same convolution
    and another fused epilogue: epilogue adds the sibling lacks are inlined first, instructions naming blocks the
    task lacks are skipped); raises what the schedule raises when the trace does not fit.
    benchmarks/tvm_share_schedules.py times it against the task's own schedule."""
    from tvm.s_tir.schedule import Schedule, Trace

    mine, theirs = _blocks(task_mod), _blocks(sibling_mod)
    sch = Schedule(task_mod)
    for extra in sorted(mine - theirs):      # epilogue adds the sibling lacks: inlined as the sibling's own were
        if extra.startswith("T_add"):
            sch.compute_inline(sch.get_sblock(extra))
    dropped, insts, decisions = [], [], {}
    for inst in sibling_trace.insts:
        if inst.kind.name == "GetSBlock" and str(inst.attrs[0]) not in mine:
            dropped.extend(inst.outputs)
            continue
        if any(hasattr(i, "same_as") and any(i.same_as(d) for d in dropped) for i in inst.inputs):
            continue
        insts.append(inst)
        if inst in sibling_trace.decisions:
            decisions[inst] = sibling_trace.decisions[inst]
    Trace(insts, decisions).apply_to_schedule(sch, remove_postproc=False)
    return sch


def warm_builder() -> None:
    """Import what MetaSchedule's default build imports on first use (~15 s on an idle core)."""
    import tvm.s_tir.tensor_intrin  # noqa: F401
    from tvm.driver import build  # noqa: F401
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # noqa: F401


def pooled_builder(timeout_sec: float, max_workers: int) -> Any:
    """A MetaSchedule builder whose worker processes live across rounds (call ``.shutdown()`` at the end).

    Why: ``LocalBuilder`` starts a fresh process pool every round (against a slow leak in long tunings) and
    each worker spends ~15 s importing tensor intrinsics — with one round per task that start-up, not the
    builds, was most of a small tuning's time on two shared cores. Builds run the same ``default_build`` and
    ``default_export`` as LocalBuilder's.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PooledBuilder(PyBuilder):
        def __init__(self) -> None:
            super().__init__()
            # The imports run as the workers' initializer, outside each build's timeout: inside it (LocalBuilder's
            # way) the first build of a fresh worker on a busy host spent its whole timeout importing and was
            # killed, the replacement worker likewise, and no candidate was ever measured.
            self.pool = PopenPoolExecutor(max_workers=max_workers, timeout=timeout_sec, initializer=warm_builder)

        def build(self, build_inputs: list) -> list:
            results = []
            args = [(None, None, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs]
            for res in self.pool.map_with_error_catching(lambda x: _worker_func(*x), args):
                if res.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(res.value, None))
                elif res.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"PooledBuilder: timeout, killed after {timeout_sec} s"))
                else:
                    results.append(BuilderResult(None, f"PooledBuilder: an exception occurred\n{res.value}"))
            return results

        def shutdown(self) -> None:
            self.pool.shutdown()

    return PooledBuilder()


UNTUNED_NOTE = "untuned: TVM compiled without MetaSchedule tuning, far slower than tuned code"


def tuning_facts(entry: TuningEntry | None, timing_note: str | None, trials: int = 0, applied: int | None = None,
                 model_tasks: int | None = None) -> dict[str, Any]:
    """The record's tuning fields: ``tuned``, the database's budget and reach, and an "untuned" timing note when
    no MetaSchedule database shaped the code (untuned TVM runs ~100x slower than ONNX Runtime).

    ``applied``/``model_tasks``: how many of this model's tasks the database covered when the library was built
    (None: not counted, the entry's own reach is used)."""
    reached, tasks = (entry.tasks_reached, entry.tasks) if entry is not None else (0, 0)
    if applied is not None and model_tasks is not None:
        reached, tasks = applied, model_tasks
    if entry is not None and reached > 0:
        facts: dict[str, Any] = {
            "tuned": True, "tuning_source": entry.source, "tuning_trials": entry.trials,
            "tuning_trials_per_task": entry.trials_per_task, "tuning_tasks": tasks,
            "tuning_tasks_reached": reached, "tuning_s": entry.tuning_s,
            "tuning_database": str(entry.path), "tuning_target": target_key(entry.target)}
        if reached < tasks:
            part = f"partly tuned: {reached} of {tasks} tasks have tuning records (the rest run untuned loops)"
            facts["timing_note"] = f"{part}; {timing_note}" if timing_note else part
        return facts
    if entry is not None:
        why = f"the tuning database {entry.path.name} covers none of this model's {tasks} tasks"
    elif trials <= 0:
        why = "no tuning database for this model and target; tune with --backend-option tuning_trials=N"
    else:
        why = "tuning found no task to tune"
    note = f"{UNTUNED_NOTE} ({why})"
    return {"tuned": False, "timing_note": f"{note}; {timing_note}" if timing_note else note}
