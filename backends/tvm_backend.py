"""Apache TVM (relax): ONNX through the relax frontend, MetaSchedule tuning with a trial budget, INT8 as QDQ.

Facts this adapter is built around (docs/toolchain-notes.md, TVM 0.27):
- Relay is gone: ``tvm.relax.frontend.onnx.from_onnx``; targets are JSON dicts (the old string form is
  rejected), so a profile's ``tvm_target`` string ("llvm -mtriple=... -mattr=+neon") is parsed into one.
- Untuned code is ~100x slower than ONNX Runtime; MetaSchedule tuning closes most of the gap but needs
  ``apache-tvm-ffi==0.1.14.post1`` (0.1.15 segfaults), xgboost, and a builder timeout of ~180 s (each build
  worker spends ~15 s importing tensor intrinsics). The budget is split over every task and the database is
  kept per (model structure, target) in ``<workdir>/tvm/tuning-db`` and in read-only seed folders
  (option ``tuning_db``; the harness passes its bundled pre-tuned demo databases): backends.tvm_tuning.
  With ``tuning_trials=0`` (the default) a database found there is applied; without one the build is untuned
  and labelled so.
- QDQ graphs import as float quantize/dequantize: INT8 numerics at FP32 speed. The record says so.
"""
from __future__ import annotations

import functools
import os
import platform
import re
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from filelock import FileLock

from backends.base import Availability, Backend, Capabilities, CompileConfig, CompiledModel, ModelArtifact
from backends.base import RuntimeConfig, UnsupportedRequest
from backends.cache import LOCK_TIMEOUT_S, file_sha256
from backends.options import NOT_KEYED, BackendOptions, at_least, choice
from backends.registry import register_backend
from backends.tvm_session import TvmSession
from backends.tvm_tuning import (
    RECORDS,
    WORKLOADS,
    UNTUNED_NOTE,  # noqa: F401  (re-exported: views label untuned rows with it)
    TuningEntry,
    TuningStore,
    budget_plan,
    entry_name,
    extract_tasks,
    pooled_builder,
    structure_sha256,
    tasks_reached,
    tune_tasks,
    tuning_facts,
)

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

#: Seconds one MetaSchedule build / one candidate's measurement may take. Generous because the host may be busy
#: (on two cores shared by many processes a build took 10x its idle time); the builder's imports run outside it.
BUILDER_TIMEOUT_S = 600.0
RUNNER_TIMEOUT_S = 300.0
#: Tasks worth a trial budget by default: the compute-bound ones (reshapes and element-wise ops gain little and
#: each builder round costs ~15 s of worker start-up). Option tuning_ops="all" tunes every task.
DEFAULT_TUNING_OPS = ("conv2d", "matmul", "dense")
INT8_NUMERICS = "simulated (QDQ in float)"
INT8_TIMING_NOTE = "TVM runs the QDQ graph's quantize/dequantize in float: INT8 numerics at FP32 speed"
#: Conv2d layouts (data, kernel) per option value. Why NHWC by default: TVM's conv2d keeps the ONNX graph's NCHW,
#: where MetaSchedule vectorises along the image width (7 lanes on ResNet-20's last stage, a poor fit for 8/16-lane
#: AVX); in NHWC/HWIO the innermost axis is the output channels, and the weights are transposed once at compile time
#: (FoldConstant). Bundled ResNet-20, znver5, 1 thread, one bench_backends run: tuned NCHW (48 trials/task) 3.2x ONNX
#: Runtime FP32, tuned NHWC (16 trials/task, sibling schedules shared) 1.7x.
CONV_LAYOUTS = {"NHWC": ("NHWC", "HWIO"), "NCHW": ("NCHW", "OIHW")}
_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def unsupported_ops_from_error(message: str) -> list[str]:
    """Operator names from TVM's 'The following operators are not supported for frontend ONNX: a, b'."""
    m = re.search(r"not supported for frontend ONNX:\s*([^\n]+)", message)
    return [op.strip() for op in m.group(1).split(",") if op.strip()] if m else []


def parse_target_string(text: str) -> dict[str, Any]:
    """'llvm -mtriple=aarch64-linux-gnu -mattr=+neon,+dotprod' -> TVM 0.27's JSON target dict."""
    tokens = shlex.split(text)
    if not tokens:
        raise UnsupportedRequest("empty tvm_target")
    target: dict[str, Any] = {"kind": tokens[0]}
    for tok in tokens[1:]:
        if not tok.startswith("-") or "=" not in tok:
            raise UnsupportedRequest(f"cannot parse {tok!r} in tvm_target {text!r}; expected -key=value")
        key, value = tok.lstrip("-").split("=", 1)
        if key in ("mattr", "libs", "keys"):
            target[key] = [v for v in value.split(",") if v]
        elif value.isdigit():
            target[key] = int(value)
        else:
            target[key] = value
    return target


@functools.lru_cache(maxsize=1)
def host_cores() -> int:
    """CPUs this process may use, read once: a loaded TvmSession pins its thread (runtime.config_threadpool), so a
    later read in the same process would give 1 and name another target (whose tuning database is not this one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_target() -> dict[str, Any]:
    """LLVM target for this CPU: the CPU name LLVM detects (llc -mcpu=native's answer) and the usable cores."""
    from tvm.target import codegen

    return {"kind": "llvm", "mcpu": str(codegen.llvm_get_system_cpu()), "num-cores": host_cores()}


def target_for(device: "DeviceProfile", config: CompileConfig) -> dict[str, Any]:
    """The device profile's tvm_target (or this host's LLVM CPU target) as a JSON dict."""
    if config.target:
        return parse_target_string(config.target) if config.target.strip().startswith(("llvm", "cuda", "c ")) \
            else {"kind": config.target}
    if device.tvm_target:
        return parse_target_string(device.tvm_target)
    return host_target()


def _target_arch(target: dict[str, Any]) -> str | None:
    triple = target.get("mtriple")
    if not triple:
        return None
    return _ARCH_ALIASES.get(str(triple).split("-")[0], str(triple).split("-")[0])


@dataclass(frozen=True)
class TvmOptions(BackendOptions):
    """TVM compile options."""

    #: MetaSchedule trial budget split over every task (0: no tuning; a database already in the cache or the
    #: tuning_db folders for this model and target is still applied, and the record says which).
    tuning_trials: int = 0
    #: Static batch the library is built for.
    batch: int = 1
    #: Comma-separated task-name fragments worth tuning, or "all".
    tuning_ops: str = ",".join(DEFAULT_TUNING_OPS)
    #: Trials per task (None: tuning_trials split evenly over the tasks, so every task gets some); setting it
    #: tunes even with tuning_trials=0.
    tuning_trials_per_task: int | None = None
    #: Trials per MetaSchedule round (None: each task's share in one round, at most 64).
    tuning_trials_per_round: int | None = None
    #: Extra folders of tuning entries searched read-only after the cache (os.pathsep-separated); the harness
    #: passes its bundled pre-tuned databases here. Not in the cache key: the records' sha256 of the entry it
    #: selects is (tuning_records_sha256), so a moved checkout or a copied database reuses the artifact.
    tuning_db: str = field(default="", metadata=NOT_KEYED)
    #: Percentile for INT8's ONNX Runtime QDQ graph under percentile calibration.
    percentile: float = 99.999
    #: Layout conv2d is compiled in: "NHWC" (channels innermost) or "NCHW" (the ONNX graph's own); see CONV_LAYOUTS.
    #: Tuning databases are kept per layout (its tasks differ).
    conv_layout: str = "NHWC"

    def __post_init__(self) -> None:
        at_least("tuning_trials", self.tuning_trials, 0)
        at_least("batch", self.batch, 1)
        at_least("tuning_trials_per_round", self.tuning_trials_per_round, 1)
        at_least("tuning_trials_per_task", self.tuning_trials_per_task, 1)
        choice("conv_layout", self.conv_layout, tuple(CONV_LAYOUTS))


@register_backend("tvm")
class TvmBackend(Backend):
    """Apache TVM relax on an LLVM CPU target (or CUDA where a GPU is present)."""

    install_hint: ClassVar[str] = 'pip install ".[tvm]"  (apache-tvm 0.27, apache-tvm-ffi==0.1.14.post1, xgboost-cpu)'
    Options: ClassVar[type[BackendOptions]] = TvmOptions
    display_name: ClassVar[str] = "Apache TVM"
    #: 2: the tuning_db folder's path left out of the key (the selected records' sha256 stays in it).
    ARTIFACT_VERSION: ClassVar[int] = 2

    @classmethod
    def availability(cls) -> Availability:
        try:
            import tvm
            from tvm.relax.frontend.onnx import from_onnx  # noqa: F401
        except Exception as exc:
            return Availability(False, f"apache-tvm is not importable ({exc})", cls.install_hint)
        return Availability(True, version=str(tvm.__version__))

    def capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "int8"),
            # INT8 is ONNX Runtime's QDQ graph imported into TVM: ORT's calibrations apply.
            calibration_methods=("minmax", "entropy", "percentile", "learned"),
            granularities=("per_tensor", "per_channel"),
            targets=("llvm", "cuda"),
        )

    # -- compile -----------------------------------------------------------------------------
    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        import tvm

        self.check_request(config)
        opts = self.options(config)
        target_dict = target_for(device, config)
        self._check_runnable(target_dict)
        trials, batch = opts.tuning_trials, opts.batch
        # Every input's shape fixed (symbolic height/width from the data): never a 0 dimension in the shape dict.
        meta: dict[str, Any] = {"tvm_target": target_dict, "tuning_trials": trials, "static_batch": batch,
                                "tvm_conv_layout": "/".join(CONV_LAYOUTS[opts.conv_layout]),
                                "input_names": list(model.input_names),
                                "input_shapes": {k: list(v) for k, v in model.static_input_shapes(batch).items()}}
        source = Path(model.path)
        if config.precision == "int8":
            source = self._qdq_graph(model, device, config, calibration, workdir, opts.percentile)
            meta.update(int8_numerics=INT8_NUMERICS, timing_note=INT8_TIMING_NOTE, quantizer="onnxruntime QDQ",
                        calibration_method=config.calibration or "minmax", activation_signed=config.activation_signed)
        ops = None if opts.tuning_ops == "all" else [o.strip() for o in opts.tuning_ops.split(",") if o.strip()]
        shapes = meta["input_shapes"]
        store = TuningStore(Path(workdir) / self.name / "tuning-db",
                            [s for s in opts.tuning_db.split(os.pathsep) if s.strip()])
        entry = self._tuning_entry(store, source, model, shapes, target_dict, trials, ops, opts)

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            mod = self._import(source, model, batch, opts.conv_layout)
            target = tvm.target.Target(target_dict)
            facts: dict[str, Any] = {}
            if entry is not None:
                # The entry matched by structure; count the tasks its records really cover (a QDQ graph bakes its
                # activation scales into the kernels, so another checkpoint's records may not apply).
                tasks = extract_tasks(_fused(mod, target), target, ops)
                facts = {"tuning_tasks_model": len(tasks), "tuning_tasks_applied": tasks_reached(entry.path, tasks)}
            executable = _compile_with_database(mod, target, entry.path) if entry is not None else \
                tvm.compile(mod, target=target)
            executable.export_library(str(out_dir / "model.so"))
            return "model.so", facts

        tuning_id = None if entry is None else file_sha256(entry.path / RECORDS)
        entry_facts = self.cached_build(workdir, model, config, calibration if config.precision == "int8" else None,
                                        str(tvm.__version__), build, target=target_dict,
                                        source_sha256=file_sha256(source), tuning_records_sha256=tuning_id,
                                        conv_layout=opts.conv_layout)
        meta.update(entry_facts.metadata())
        meta.update(tuning_facts(entry, meta.get("timing_note"), trials, meta.get("tuning_tasks_applied"),
                                 meta.get("tuning_tasks_model")))
        return CompiledModel(self.name, config.precision, entry_facts.path, meta)

    def _tuning_entry(self, store: TuningStore, source: Path, model: ModelArtifact, shapes: dict[str, list[int]],
                      target_dict: dict[str, Any], trials: int, ops: list[str] | None,
                      opts: "TvmOptions") -> TuningEntry | None:
        """The tuning database this build uses: the store's entry for (structure, target), tuned now when the
        request's budget exceeds what the store holds; None when there is none and no budget was given."""
        import tvm

        batch, layout = opts.batch, opts.conv_layout
        structure = structure_sha256(source, shapes, layout_variant(layout))
        entry = store.find(structure, target_dict)
        per_task = opts.tuning_trials_per_task
        if (trials <= 0 and per_task is None) or _enough(entry, trials, per_task):
            return entry
        dest = store.root / entry_name(structure, target_dict)
        store.root.mkdir(parents=True, exist_ok=True)
        # One tuner per (structure, target) at a time; a second run waits for it and then uses its entry.
        with FileLock(str(dest) + ".lock", timeout=LOCK_TIMEOUT_S):
            again = store.find(structure, target_dict)   # another run may have tuned it while we waited
            if again is not None and again.source == "cache" and _enough(again, trials, per_task):
                return again
            target = tvm.target.Target(target_dict)
            fused = _fused(self._import(source, model, batch, layout), target)
            tasks = extract_tasks(fused, target, ops)
            if not tasks:
                return entry
            plan = budget_plan(trials, len(tasks), per_task, opts.tuning_trials_per_round)
            if again is not None:   # only the trials the entry lacks
                plan = budget_plan(1, len(tasks), max(1, plan.per_task - again.trials_per_task),
                                   opts.tuning_trials_per_round)
            staging = store.root / f".{dest.name}.tuning"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            before = (0, 0.0)
            if again is not None:
                # Continue from the records we have: the search starts from them and the cost model learns on them.
                for f in (WORKLOADS, RECORDS):
                    shutil.copy2(again.path / f, staging / f)
                before = (again.trials_per_task, again.tuning_s)
            from tvm.s_tir import meta_schedule as ms

            builder = pooled_builder(BUILDER_TIMEOUT_S, host_cores())
            try:
                tuning_s = tune_tasks(tasks, target, staging, plan, builder=builder,
                                      runner=ms.runner.LocalRunner(timeout_sec=RUNNER_TIMEOUT_S))
            finally:
                builder.shutdown()
            per_task = before[0] + plan.per_task
            TuningEntry(staging, structure, target_dict, model.name, per_task * len(tasks), per_task,
                        len(tasks), tasks_reached(staging, tasks), round(before[1] + tuning_s, 1), str(tvm.__version__),
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), ",".join(ops) if ops else "all",
                        conv_layout=layout).write()
            shutil.rmtree(dest, ignore_errors=True)
            staging.replace(dest)
            found = store.find(structure, target_dict)
            return None if found is None else TuningEntry(**{**found.__dict__, "source": "tuned now"})

    def _check_runnable(self, target: dict[str, Any]) -> None:
        """Refuse targets this host cannot run (a cross-compiled .so would not load here)."""
        import tvm

        if target["kind"] == "cuda" and not tvm.cuda().exist:
            raise UnsupportedRequest("TVM target cuda needs an NVIDIA GPU and a CUDA-enabled TVM build; none here")
        arch = _target_arch(target)
        host = _ARCH_ALIASES.get(platform.machine().lower(), platform.machine().lower())
        if arch is not None and arch != host:
            raise UnsupportedRequest(f"TVM target {target.get('mtriple')} is a cross target: its library cannot run "
                                     f"on this {host} host (run the job on the {arch} device)")
        if target["kind"] not in ("llvm", "cuda"):
            raise UnsupportedRequest(f"TVM target kind {target['kind']!r} is not handled; valid: llvm, cuda")

    def _qdq_graph(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                   calibration: np.ndarray | None, workdir: Path, percentile: float) -> Path:
        if config.calibration == "learned" and model.qdq_path is not None:
            return Path(model.qdq_path)
        from backends.onnxruntime_backend import OnnxRuntimeBackend

        ort_config = CompileConfig(precision="int8", calibration=config.calibration, per_channel=config.per_channel,
                                   activation_signed=config.activation_signed,
                                   calibration_samples=config.calibration_samples,
                                   options=(("percentile", percentile),))
        return Path(OnnxRuntimeBackend().compile(model, device, ort_config, calibration, workdir).path)

    @staticmethod
    def _import(path: Path, model: ModelArtifact, batch: int, conv_layout: str = "NCHW") -> Any:
        """The ONNX graph as a relax module at ``batch``, conv2d in ``conv_layout`` (CONV_LAYOUTS) with constant
        weights already transposed; UnsupportedRequest naming the operators the frontend lacks."""
        import onnx
        import tvm
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx

        try:
            shapes = {name: list(dims) for name, dims in model.static_input_shapes(batch).items()}
            mod = from_onnx(onnx.load(str(path)), shape_dict=shapes)
        except tvm.error.OpNotImplemented as exc:
            ops = unsupported_ops_from_error(str(exc))
            raise UnsupportedRequest(f"TVM's ONNX frontend does not support operator(s) "
                                     f"{', '.join(ops) or str(exc)}") from None
        mod = relax.transform.DecomposeOpsForInference()(mod)
        if conv_layout != "NCHW":
            mod = relax.transform.ConvertLayout({"relax.nn.conv2d": list(CONV_LAYOUTS[conv_layout])})(mod)
            mod = relax.transform.FoldConstant()(mod)
        return mod

    # -- load --------------------------------------------------------------------------------
    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> TvmSession:
        meta = dict(compiled.metadata)
        return TvmSession(Path(compiled.path), meta.get("tvm_target", {}).get("kind", "llvm"),
                          int(meta.get("static_batch", 1)), runtime.threads, meta.get("input_names"))


def layout_variant(conv_layout: str) -> str:
    """The tuning-entry identity's layout part: "" for NCHW (entries tuned before layouts were an option), else
    the layout pair, because a layout's kernels are other MetaSchedule tasks."""
    return "" if conv_layout == "NCHW" else "conv2d:" + "/".join(CONV_LAYOUTS[conv_layout])


def _enough(entry: TuningEntry | None, trials: int, per_task: int | None) -> bool:
    """Whether an existing entry already holds the requested budget (total, or per task when that is given)."""
    if entry is None:
        return False
    return entry.trials_per_task >= per_task if per_task is not None else entry.trials >= trials


def _fused(mod: Any, target: Any) -> Any:
    """Legalize and fuse as compile_relax does, so the tasks tuned here are the keys it looks up."""
    import tvm
    from tvm import relax
    from tvm.relax import pipeline

    try:
        dispatch = list(pipeline.library_dispatch_passes(target))
    except (ValueError, AttributeError):
        dispatch = []
    seq = tvm.transform.Sequential([
        *dispatch, relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()])
    with target:
        return seq(mod)


def _compile_with_database(mod: Any, target: Any, db_dir: Path) -> Any:
    from tvm.s_tir import meta_schedule as ms

    database = ms.database.JSONDatabase(work_dir=str(db_dir))
    return ms.relax_integration.compile_relax(database, mod, target, params={})
