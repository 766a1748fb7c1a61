"""Apache TVM (relax): ONNX through the relax frontend, MetaSchedule tuning with a trial budget, INT8 as QDQ.

Facts this adapter is built around (docs/toolchain-notes.md, TVM 0.27):
- Relay is gone: ``tvm.relax.frontend.onnx.from_onnx``; targets are JSON dicts (the old string form is
  rejected), so a profile's ``tvm_target`` string ("llvm -mtriple=... -mattr=+neon") is parsed into one.
- Untuned code is ~100x slower than ONNX Runtime; MetaSchedule tuning closes most of the gap but needs
  ``apache-tvm-ffi==0.1.14.post1`` (0.1.15 segfaults), xgboost, and a builder timeout of ~180 s (each build
  worker spends ~15 s importing tensor intrinsics). The tuning database is cached per (model, target), so
  a second run with the same budget only compiles.
- QDQ graphs import as float quantize/dequantize: INT8 numerics at FP32 speed. The record says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np
from filelock import FileLock

from backends.base import (
    Availability,
    Backend,
    Capabilities,
    CompileConfig,
    CompiledModel,
    ModelArtifact,
    RuntimeConfig,
    UnsupportedRequest,
)
from backends.cache import LOCK_TIMEOUT_S, file_sha256
from backends.options import BackendOptions, at_least
from backends.registry import register_backend

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

#: Seconds a MetaSchedule build may take (the 30 s default kills builds that spend ~15 s on imports).
BUILDER_TIMEOUT_S = 180.0
RUNNER_TIMEOUT_S = 60.0
#: Tasks worth a trial budget by default: the compute-bound ones (reshapes and element-wise ops gain little and
#: each builder round costs ~15 s of worker start-up). Option tuning_ops="all" tunes every task.
DEFAULT_TUNING_OPS = ("conv2d", "matmul", "dense")
UNTUNED_NOTE = "untuned: TVM compiled without MetaSchedule tuning, far slower than tuned code"
INT8_NUMERICS = "simulated (QDQ in float)"
INT8_TIMING_NOTE = "TVM runs the QDQ graph's quantize/dequantize in float: INT8 numerics at FP32 speed"
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


def host_cores() -> int:
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

    #: MetaSchedule trial budget (0: untuned, labelled so in the record).
    tuning_trials: int = 0
    #: Static batch the library is built for.
    batch: int = 1
    #: Comma-separated task-name fragments worth tuning, or "all".
    tuning_ops: str = ",".join(DEFAULT_TUNING_OPS)
    #: Trials per MetaSchedule round (None: derived from the budget and the task count).
    tuning_trials_per_round: int | None = None
    #: Percentile for INT8's ONNX Runtime QDQ graph under percentile calibration.
    percentile: float = 99.999

    def __post_init__(self) -> None:
        at_least("tuning_trials", self.tuning_trials, 0)
        at_least("batch", self.batch, 1)
        at_least("tuning_trials_per_round", self.tuning_trials_per_round, 1)


@register_backend("tvm")
class TvmBackend(Backend):
    """Apache TVM relax on an LLVM CPU target (or CUDA where a GPU is present)."""

    install_hint: ClassVar[str] = 'pip install ".[tvm]"  (apache-tvm 0.27, apache-tvm-ffi==0.1.14.post1, xgboost-cpu)'
    Options: ClassVar[type[BackendOptions]] = TvmOptions
    display_name: ClassVar[str] = "Apache TVM"

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
        target_key = json.dumps(target_dict, sort_keys=True)
        # Every input's shape fixed (symbolic height/width from the data): never a 0 dimension in the shape dict.
        meta: dict[str, Any] = {"tvm_target": target_dict, "tuning_trials": trials, "static_batch": batch,
                                "input_names": list(model.input_names),
                                "input_shapes": {k: list(v) for k, v in model.static_input_shapes(batch).items()}}
        source = Path(model.path)
        if config.precision == "int8":
            source = self._qdq_graph(model, device, config, calibration, workdir, opts.percentile)
            meta.update(int8_numerics=INT8_NUMERICS, timing_note=INT8_TIMING_NOTE, quantizer="onnxruntime QDQ",
                        calibration_method=config.calibration or "minmax", activation_signed=config.activation_signed)
        ops = None if opts.tuning_ops == "all" else [o.strip() for o in opts.tuning_ops.split(",") if o.strip()]

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            mod = self._import(source, model, batch)
            target = tvm.target.Target(target_dict)
            facts: dict[str, Any] = {}
            if trials > 0:
                model_key = file_sha256(source)[:16]
                db_dir = Path(workdir) / self.name / "tuning" / \
                    f"{model_key}-{hashlib.sha256(target_key.encode()).hexdigest()[:12]}-b{batch}"
                db_dir.parent.mkdir(parents=True, exist_ok=True)
                # The database is shared by every entry of this model and target: one tuner at a time.
                with FileLock(str(db_dir) + ".lock", timeout=LOCK_TIMEOUT_S):
                    facts.update(_tune(mod, target, db_dir, trials, ops, opts.tuning_trials_per_round))
                executable = _compile_with_database(mod, target, db_dir) if facts["tuning_database"] else \
                    tvm.compile(mod, target=target)
            else:
                executable = tvm.compile(mod, target=target)
            executable.export_library(str(out_dir / "model.so"))
            return "model.so", facts

        entry = self.cached_build(workdir, model, config, calibration if config.precision == "int8" else None,
                                  str(tvm.__version__), build, target=target_dict, source_sha256=file_sha256(source))
        meta.update(entry.metadata())
        meta.update(tuning_facts(trials, entry.facts, meta.get("timing_note")))
        return CompiledModel(self.name, config.precision, entry.path, meta)

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
    def _import(path: Path, model: ModelArtifact, batch: int) -> Any:
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
        return relax.transform.DecomposeOpsForInference()(mod)

    # -- load --------------------------------------------------------------------------------
    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> "TvmSession":
        meta = dict(compiled.metadata)
        return TvmSession(Path(compiled.path), meta.get("tvm_target", {}).get("kind", "llvm"),
                          int(meta.get("static_batch", 1)), runtime.threads, meta.get("input_names"))


def tuning_facts(trials: int, facts: Mapping[str, Any], timing_note: str | None) -> dict[str, Any]:
    """``tuned`` for the record, and an "untuned" timing note when no MetaSchedule database shaped the code
    (untuned TVM code runs ~100x slower than ONNX Runtime: its timing says nothing about tuned TVM)."""
    if trials > 0 and facts.get("tuning_database"):
        return {"tuned": True}
    why = "tuning_trials=0" if trials <= 0 else str(facts.get("tuning_note") or "no tuning database")
    note = f"{UNTUNED_NOTE} ({why})"
    return {"tuned": False, "timing_note": f"{note}; {timing_note}" if timing_note else note}


def _tune(mod: Any, target: Any, db_dir: Path, trials: int, ops: list[str] | None,
          per_round: int | None = None) -> dict[str, Any]:
    """MetaSchedule with a trial budget; a database already holding this budget is reused as is."""
    import time

    from tvm.s_tir import meta_schedule as ms

    marker = db_dir / "budget.json"
    previous = json.loads(marker.read_text()) if marker.exists() else {}
    if previous.get("trials", 0) >= trials and previous.get("ops") == ops:
        return {"tuning_database": str(db_dir), "tuning_reused": True, "tuning_s": 0.0, "tuning_ops": ops or "all"}
    db_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fused = _fused(mod, target)
    tasks = [t for t in ms.relax_integration.extract_tasks(fused, target)
             if ops is None or any(op in t.task_name for op in ops)]
    if not tasks:
        return {"tuning_database": None, "tuning_reused": False, "tuning_s": 0.0, "tuning_ops": ops or "all",
                "tuning_note": "no task matched tuning_ops: compiled untuned"}
    # Each round restarts the builder workers (~15 s of imports each, more on a busy host), so rounds are the
    # cost: at least min(8, budget) trials per round, spread over the tasks when the budget allows.
    per_iter = int(per_round) if per_round else max(min(8, trials), min(64, trials // len(tasks)))
    ms.relax_integration.tune_relax(
        mod=fused, params={}, target=target, work_dir=str(db_dir), max_trials_global=trials,
        op_names=ops,
        num_trials_per_iter=per_iter,
        builder=ms.builder.LocalBuilder(timeout_sec=BUILDER_TIMEOUT_S, max_workers=host_cores()),
        runner=ms.runner.LocalRunner(timeout_sec=RUNNER_TIMEOUT_S),
    )
    elapsed = time.perf_counter() - t0
    marker.write_text(json.dumps({"trials": trials, "ops": ops, "tuning_s": elapsed}))
    return {"tuning_database": str(db_dir), "tuning_reused": False, "tuning_s": elapsed, "tuning_ops": ops or "all",
            "tuning_tasks": len(tasks), "trials_per_round": per_iter}


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


class TvmSession:
    """A relax VirtualMachine on the exported library; the library is built for a static batch.

    ``main`` takes the graph inputs positionally in graph order and returns one tensor or a (nested) tuple of
    them for a multi-output graph; ``run`` flattens that into the graph's output order.
    """

    def __init__(self, lib: Path, kind: str, batch: int, threads: int | None,
                 input_names: Sequence[str] | None = None) -> None:
        import tvm
        from tvm import relax

        if threads is not None:
            # mode 1 = big cores first; sets the size of TVM's own thread pool for this process.
            tvm.get_global_func("runtime.config_threadpool")(1, int(threads))
        self._tvm = tvm
        self._dev = tvm.cuda() if kind == "cuda" else tvm.cpu()
        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), self._dev)
        self._main = self._vm["main"]
        self._batch = batch
        self._names = tuple(input_names) if input_names else None

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        names = self._names or tuple(feeds)
        if set(names) != set(feeds):
            raise ValueError(f"TVM library takes inputs {list(names)}; it was fed {sorted(feeds)}")
        xs = [np.ascontiguousarray(feeds[n]) for n in names]
        n = len(xs[0])
        if n % self._batch:
            raise UnsupportedRequest(f"TVM library is built for batch {self._batch}; got {n} samples")
        chunks = []
        for i in range(0, n, self._batch):
            args = [self._tvm.runtime.tensor(x[i:i + self._batch], self._dev) for x in xs]
            chunks.append(_flatten(self._main(*args)))
        if len(chunks) == 1:
            return chunks[0]
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]

    def synchronize(self) -> None:
        self._dev.sync()

    def close(self) -> None:
        self._vm = None
        self._main = None


def _flatten(result: Any) -> list[np.ndarray]:
    """A VM result (a tensor, or a possibly nested tuple/Array of tensors) as host arrays in order."""
    if hasattr(result, "numpy"):
        return [result.numpy()]
    out: list[np.ndarray] = []
    for item in result:
        out.extend(_flatten(item))
    return out
