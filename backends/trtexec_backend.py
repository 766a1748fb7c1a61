"""TensorRT through the ``trtexec`` command-line tool, for boards where the Python bindings are missing.

``compile`` builds the engine *and times it* with trtexec (``--iterations --warmUp --avgRuns --percentile
--exportTimes``) and parses trtexec's performance summary. Those figures are trtexec's own measurement (its
"Latency" = H2D + GPU compute + D2H per query, on its own random-free inputs), not the harness loop: the
artifact says so (``timing = "none"``, ``timing_note``) and carries them as ``external_timing`` (record field
names) plus the full summary (GPU compute time, throughput, H2D/D2H) for the record's ``extra``.

Fidelity still runs: through the TensorRT Python runtime on the same engine when it is installed, otherwise
by asking trtexec for the outputs (``--loadInputs`` / ``--exportOutput``), one process per engine batch (slow
but exact).

INT8: trtexec cannot calibrate (``--int8`` alone uses placeholder scales, useful only for speed). This adapter
therefore takes INT8 only with real scales: an explicit QDQ graph (built from the calibration images, or the
checkpoint's learned one), or ``--calib=<cache>`` with the calibration cache the ``tensorrt`` backend wrote for
the same model, method and data.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from backends.base import Availability, Backend, BackendUnavailable, Capabilities, CompileConfig, CompiledModel
from backends.base import ModelArtifact, RuntimeConfig, UnsupportedRequest, single_feed
from backends.options import BackendOptions, at_least
from backends.registry import register_backend
from backends.tensorrt_backend import _OOM_PATTERN, DEFAULT_MAX_BATCH, ENGINE_FILE, SIDECAR_FILE, EngineBuildError
from backends.tensorrt_backend import TrtBuildOptions, onnx_batch_dim, parse_target, read_sidecar
from backends.tensorrt_int8 import IMPLICIT_METHODS, build_qdq_graph, calibration_cache_path, select_int8_route
from backends.tensorrt_runtime import check_supported_version, tensorrt_availability
from backends.trtexec_output import (  # noqa: F401  (re-exported: the adapter's transcript parsing)
    TIMING_NOTE,
    parse_export_output,
    parse_export_times,
    parse_summary,
    parse_trtexec_version,
    summary_to_record,
)

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

#: Where JetPack and NVIDIA's Debian packages put trtexec (it is not on PATH by default).
TRTEXEC_DIRS = ("/usr/src/tensorrt/bin",)
TRTEXEC_INSTALL_HINT = ("ships with TensorRT: /usr/src/tensorrt/bin/trtexec on JetPack (sudo apt install tensorrt), "
                        "bin/trtexec in the desktop TensorRT tar (docs/nvidia.md)")
DEFAULT_ITERATIONS = 1000   # the harness protocol's 200 timed iterations x 5 runs
DEFAULT_WARMUP_MS = 500
DEFAULT_AVG_RUNS = 10
DEFAULT_TIMEOUT_S = 1800.0

#: Runs a command: argv -> (returncode, combined output). Injectable for tests.
CommandRunner = Callable[[Sequence[str], float], "tuple[int, str]"]


def default_command_runner(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out + f"\n[harness] trtexec did not finish within {timeout_s:.0f} s"
    return p.returncode, (p.stdout or "") + (p.stderr or "")


def find_trtexec(dirs: Sequence[str] = TRTEXEC_DIRS) -> str | None:
    """trtexec on PATH, else in TensorRT's install directories."""
    found = shutil.which("trtexec")
    if found:
        return found
    for d in dirs:
        p = Path(d) / "trtexec"
        if p.is_file():
            return str(p)
    return None


# -- transcript parsing --------------------------------------------------------------------------

def _build_flags(precision: str, opts: "TrtexecOptions", dla_core: int | None, calib_cache: Path | None) -> list[str]:
    """trtexec's precision, calibration and DLA flags for one build."""
    flags = []
    if precision == "fp32" and not opts.allow_tf32:
        flags.append("--noTF32")
    if precision == "fp16":
        flags.append("--fp16")
    if precision == "int8":
        flags.append("--int8")
        if opts.int8_fp16_fallback if opts.int8_fp16_fallback is not None else dla_core is not None:
            flags.append("--fp16")
        if calib_cache is not None:
            flags.append(f"--calib={calib_cache}")
    if dla_core is not None:
        flags.append(f"--useDLACore={dla_core}")
        if opts.gpu_fallback:
            flags.append("--allowGPUFallback")
    return flags


@dataclass(frozen=True)
class TrtexecOptions(TrtBuildOptions):
    """Options of the trtexec adapter: the engine build's plus trtexec's own timing protocol."""

    #: Batch trtexec times (and the dynamic profile's optimum).
    batch: int = 1
    iterations: int = DEFAULT_ITERATIONS
    warmup_ms: int = DEFAULT_WARMUP_MS
    avg_runs: int = DEFAULT_AVG_RUNS
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("batch", "iterations", "avg_runs"):
            at_least(name, getattr(self, name), 1)
        at_least("warmup_ms", self.warmup_ms, 0)
        at_least("timeout_s", self.timeout_s, 1.0)


def _shape_arg(name: str, shape: Sequence[int]) -> str:
    return f"{name}:{'x'.join(str(int(d)) for d in shape)}"


@register_backend("trtexec")
class TrtexecBackend(Backend):
    """Build and time TensorRT engines with trtexec; fidelity through the Python runtime or trtexec."""

    install_hint: ClassVar[str] = TRTEXEC_INSTALL_HINT
    display_name: ClassVar[str] = "TensorRT (trtexec)"
    #: Tests swap these; production uses PATH/TensorRT dirs and subprocess.
    search_dirs: ClassVar[tuple[str, ...]] = TRTEXEC_DIRS
    runner: ClassVar[CommandRunner] = staticmethod(default_command_runner)  # type: ignore[assignment]
    Options: ClassVar[type[BackendOptions]] = TrtexecOptions

    @classmethod
    def availability(cls) -> Availability:
        exe = find_trtexec(cls.search_dirs)
        if exe is None:
            return Availability(False, f"trtexec is not on PATH nor in {', '.join(cls.search_dirs)}",
                                TRTEXEC_INSTALL_HINT)
        try:
            rc, text = cls.runner([exe, "--help"], 60.0)
        except OSError as exc:
            return Availability(False, f"{exe} cannot run ({exc})", TRTEXEC_INSTALL_HINT)
        version = parse_trtexec_version(text)
        if version is not None:
            try:
                check_supported_version(version)
            except UnsupportedRequest as exc:
                return Availability(False, str(exc), TRTEXEC_INSTALL_HINT, version)
        return Availability(True, version=version)

    def capabilities(self) -> Capabilities:
        return Capabilities(precisions=("fp32", "fp16", "int8"), calibration_methods=IMPLICIT_METHODS + ("learned",),
                            granularities=("per_tensor", "per_channel"), targets=("gpu", "dla0", "dla1"))

    def _run(self, argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
        return type(self).runner(argv, timeout_s)

    # -- compile (= build + time) -----------------------------------------------------------------
    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        self.check_request(config)
        model.require_single_io(self.name)
        avail = self.availability()
        if not avail.available:
            raise BackendUnavailable(avail.explain())
        opts = self.options(config)
        # Every non-batch dimension fixed (symbolic height/width come from the data): never a 0 or -1 shape.
        sample = model.static_input_shapes(1)[model.input_name][1:]
        exe = find_trtexec(self.search_dirs)
        version = avail.version or "unknown"
        dla_core = parse_target(config.target)
        if dla_core is not None and config.precision == "fp32":
            raise UnsupportedRequest("DLA runs FP16 or INT8 only; ask for fp16 or int8 with target=dla")
        route = select_int8_route(model, config.calibration, config.per_channel, opts.int8_mode) \
            if config.precision == "int8" else None
        calib_cache = None
        if route is not None and route.mode == "implicit":
            if calibration is None:
                raise UnsupportedRequest("TensorRT implicit INT8 needs a calibration set and none was given")
            calib_cache = calibration_cache_path(workdir, model, route.method, calibration, version)
            if not calib_cache.exists():
                raise UnsupportedRequest(
                    "trtexec cannot calibrate (--int8 without --calib uses placeholder scales); run the tensorrt "
                    f"backend once to write {calib_cache.name}, or use int8_mode=explicit / calibration=learned")
        gpu = gpu_identity()
        fixed = onnx_batch_dim(Path(model.path), model.input_name)
        batch = max(1, opts.batch)
        max_batch = max(batch, opts.max_batch)
        meta: dict[str, Any] = {"tensorrt_version": version, "gpu_name": gpu, "compute_capability": None,
                                "target": "gpu" if dla_core is None else f"dla{dla_core}",
                                "timing": "none", "timing_note": TIMING_NOTE, "timing_source": "trtexec",
                                "input_name": model.input_name, "output_name": model.output_name}
        if route is not None:
            meta.update(int8_mode=route.mode, int8_source=route.source, calibration_method=route.method,
                        activation_signed=True)  # TensorRT's INT8 is signed symmetric

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            onnx_path, facts = Path(model.path), {}
            if route is not None and route.mode == "explicit":
                onnx_path, facts = build_qdq_graph(model, route, calibration, config.per_channel, out_dir,
                                                   opts.percentile)
            engine = out_dir / ENGINE_FILE
            argv = [exe, f"--onnx={onnx_path}", f"--saveEngine={engine}", f"--memPoolSize=workspace:{opts.workspace_mib}"]
            argv += _build_flags(config.precision, opts, dla_core, calib_cache)
            if fixed is None:
                argv += [f"--minShapes={_shape_arg(model.input_name, (1,) + sample)}",
                         f"--optShapes={_shape_arg(model.input_name, (batch,) + sample)}",
                         f"--maxShapes={_shape_arg(model.input_name, (max_batch,) + sample)}"]
            facts.update(self._time(argv, out_dir, model, opts, fixed, batch, version))
            (out_dir / SIDECAR_FILE).write_text(json.dumps(
                {"tensorrt_version": version, "gpu_name": gpu, "compute_capability": None,
                 "target": meta["target"], "precision": config.precision, "model_sha256": model.sha256,
                 "max_batch": fixed or max_batch, "fixed_batch": fixed, "built_by": "trtexec"}, indent=2, sort_keys=True))
            return ENGINE_FILE, facts

        uses_images = route is not None and route.source != "qdq-checkpoint"
        entry = self.cached_build(workdir, model, config, calibration if uses_images else None, version, build,
                                  gpu=gpu, dla_core=dla_core,
                                  route=None if route is None else [route.mode, route.source, route.method])
        meta.update(entry.metadata(), engine_dir=str(entry.directory))
        if entry.cached:  # the engine is reused; the timing is this run's own
            (entry.directory / "runs").mkdir(exist_ok=True)
            runs = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%dT%H%M%S-"), dir=entry.directory / "runs"))
            meta.update(self._time([exe, f"--loadEngine={entry.path}"], runs, model, opts, fixed, batch, version))
        return CompiledModel(self.name, config.precision, entry.path, meta)

    def _time(self, argv: list[str], out_dir: Path, model: ModelArtifact, opts: "TrtexecOptions",
              fixed: int | None, batch: int, version: str) -> dict[str, Any]:
        """Run trtexec (build + time, or time a loaded engine); its parsed figures as record facts."""
        if fixed is None:
            sample = model.static_input_shapes(1)[model.input_name][1:]  # symbolic H/W fixed from the data
            argv = argv + [f"--shapes={_shape_arg(model.input_name, (batch,) + sample)}"]
        times_path = out_dir / "times.json"
        argv = argv + [f"--iterations={opts.iterations}", "--duration=0", f"--warmUp={opts.warmup_ms}",
                       f"--avgRuns={opts.avg_runs}", f"--exportTimes={times_path}"]
        major = int(version.split(".")[0]) if version[0].isdigit() else None
        # 10.x takes a list of percentiles; 8.x takes one value (the median is always reported).
        argv.append("--percentile=90,95,99" if major == 10 else "--percentile=99")
        t0 = time.perf_counter()
        rc, text = self._run(argv, opts.timeout_s)
        log = out_dir / "trtexec.log"
        log.write_text(" ".join(argv) + "\n" + text)
        facts: dict[str, Any] = {"trtexec_command": " ".join(argv), "trtexec_log": str(log),
                                 "trtexec_wall_s": round(time.perf_counter() - t0, 3)}
        if rc != 0 or "&&&& FAILED" in text:
            tail = " | ".join(ln.strip() for ln in text.strip().splitlines()[-4:])
            if _OOM_PATTERN.search(text):
                raise EngineBuildError(f"trtexec ran out of GPU memory ({tail}); free GPU memory or lower "
                                       "workspace_mib / max_batch")
            raise EngineBuildError(f"trtexec exited with {rc}: {tail} (full log: {log})")
        summary = parse_summary(text)
        facts["trtexec_version"] = parse_trtexec_version(text) or version
        facts["trtexec_summary"] = summary
        facts["external_timing"] = summary_to_record(summary, batch)
        # Without the Python runtime, outputs come from one trtexec process per call: validate in engine batches.
        facts["validate_batch"] = fixed or max(batch, opts.max_batch)
        if times_path.exists():
            lat = parse_export_times(times_path)
            np.save(out_dir / "latencies_ms.npy", lat)
            facts.update(trtexec_iterations=int(lat.size), trtexec_latencies_file=str(out_dir / "latencies_ms.npy"))
        return facts

    # -- load: fidelity path ------------------------------------------------------------------------
    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> Any:
        if tensorrt_availability().available:
            from backends.tensorrt_backend import TensorRTSession
            from backends.tensorrt_runtime import CudaRuntime, import_tensorrt

            trt = import_tensorrt()
            side = read_sidecar(Path(compiled.path).parent) or {}
            if side.get("tensorrt_version") == str(trt.__version__):
                return TensorRTSession(Path(compiled.path), trt, CudaRuntime.load(), compiled.metadata.get("dla_core"))
        if find_trtexec(self.search_dirs) is None:
            raise BackendUnavailable(f"trtexec is not on PATH nor in {', '.join(self.search_dirs)}; "
                                     f"fix: {TRTEXEC_INSTALL_HINT}")
        return TrtexecSession(self, Path(compiled.path), compiled.metadata)


class TrtexecSession:
    """Outputs through trtexec (``--loadInputs`` / ``--exportOutput``): one process per engine batch.

    For fidelity only (each call loads the engine); the timing of this backend is trtexec's own.
    """

    def __init__(self, backend: TrtexecBackend, engine: Path, meta: dict[str, Any]) -> None:
        side = read_sidecar(engine.parent) or {}
        self._backend = backend
        self._engine = engine
        self._exe = find_trtexec(backend.search_dirs)
        self._max_batch = int(side.get("max_batch", DEFAULT_MAX_BATCH))
        self._fixed = side.get("fixed_batch")
        self._input = str(meta.get("input_name", "input"))
        self._output = str(meta.get("output_name", "logits"))
        self._work = engine.parent / "io"
        self._work.mkdir(exist_ok=True)
        self.calls = 0

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        inp, outp = self._work / "input.bin", self._work / "output.json"
        n = len(x)
        if self._fixed:  # a fixed-batch engine: pad the tail, drop its outputs
            x = np.concatenate([x, np.zeros((int(self._fixed) - n,) + x.shape[1:], np.float32)])
        x.astype(np.float32).tofile(inp)
        argv = [self._exe, f"--loadEngine={self._engine}", f"--loadInputs={self._input}:{inp}",
                f"--exportOutput={outp}", "--iterations=1", "--warmUp=0", "--duration=0", "--avgRuns=1"]
        if not self._fixed:
            argv.append(f"--shapes={_shape_arg(self._input, x.shape)}")
        rc, text = self._backend._run(argv, 600.0)
        self.calls += 1
        if rc != 0:
            raise RuntimeError(f"trtexec could not produce outputs ({rc}): {text.strip().splitlines()[-1:]}")
        return parse_export_output(outp, self._output)[:n]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = np.ascontiguousarray(single_feed(feeds, self._input), dtype=np.float32)
        return [np.concatenate([self._run_chunk(x[i:i + self._max_batch])
                                for i in range(0, len(x), self._max_batch)])]

    def synchronize(self) -> None:
        """trtexec has exited (and written its outputs) when ``run`` returns."""

    def close(self) -> None:
        pass


def gpu_identity() -> str:
    """A name for the GPU engines are built for: CUDA device name, else nvidia-smi, else the Jetson model."""
    try:
        from backends.tensorrt_runtime import CudaRuntime

        info = CudaRuntime.load().device_info(0)
        return f"{info['name']} sm{info['compute_capability']}"
    except Exception:  # no bindings / no device: fall through to the other probes
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10).stdout.strip().splitlines()
            if out:
                return out[0].strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        return Path("/proc/device-tree/model").read_bytes().decode(errors="replace").replace("\x00", "").strip()
    except OSError:
        return "unknown"
