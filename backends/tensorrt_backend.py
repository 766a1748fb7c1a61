"""TensorRT through its Python API: FP32, FP16 and INT8 (implicit calibrators or explicit QDQ graphs).

The CUDA runtime and TensorRT's version checks live in :mod:`backends.tensorrt_runtime`, the INT8 routes and
calibrators in :mod:`backends.tensorrt_int8`; this module is the adapter and its session.

Inference contract (the harness calls ``run`` then ``synchronize`` before each timestamp): ``run`` copies the
batch into pinned host memory, enqueues H2D, the engine and D2H on one CUDA stream, waits on that stream and
returns an owned copy of the output, so the returned array is valid at once and is never overwritten by the
next call. ``synchronize`` waits on the stream again (cheap when idle) so the contract also holds for callers
that only rely on it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from backends.base import (
    Availability,
    Backend,
    BackendUnavailable,
    Capabilities,
    CompileConfig,
    CompiledModel,
    ModelArtifact,
    RuntimeConfig,
    UnsupportedRequest,
    single_feed,
)
from backends.options import BackendOptions, at_least, choice
from backends.registry import register_backend
from backends.tensorrt_int8 import (  # noqa: F401  (re-exported for the trtexec adapter and tests)
    DEFAULT_CALIB_BATCH,
    DEFAULT_QUANTILE,
    IMPLICIT_METHODS,
    Int8Route,
    build_qdq_graph,
    calibration_cache_path,
    make_calibrator,
    select_int8_route,
)
from backends.tensorrt_runtime import (  # noqa: F401  (re-exported)
    SUPPORTED_MAJORS,
    TENSORRT_INSTALL_HINT,
    CudaRuntime,
    check_supported_version,
    import_tensorrt,
    parse_version,
    tensorrt_availability,
)

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

DEFAULT_WORKSPACE_MIB = 1024
DEFAULT_MAX_BATCH = 32
DEFAULT_PERCENTILE = 99.999
ENGINE_FILE = "model.engine"
SIDECAR_FILE = "engine.json"

_OOM_PATTERN = re.compile(
    r"out of memory|cudaErrorMemoryAllocation|OutOfMemory|insufficient (gpu )?memory|"
    r"requested amount of gpu memory|failed to allocate", re.IGNORECASE)


class EngineBuildError(RuntimeError):
    """TensorRT could not build an engine (a failure of the run, not a refused request)."""



@dataclass(frozen=True)
class TrtBuildOptions(BackendOptions):
    """Engine-build options both TensorRT adapters (Python API and trtexec) take."""

    #: "implicit" (TensorRT calibrator) or "explicit" (QDQ graph); None: explicit for learned, else implicit.
    int8_mode: str | None = None
    #: Percentile of |activation| kept when the explicit route's QDQ graph is calibrated by percentile.
    percentile: float = DEFAULT_PERCENTILE
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    #: Let FP32 layers run as TF32 on Ampere+ (off: FP32 fidelity means real FP32).
    allow_tf32: bool = False
    #: Allow FP16 for layers INT8 cannot take (default: on for DLA, off on the GPU).
    int8_fp16_fallback: bool | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    #: DLA only: run layers DLA cannot take on the GPU.
    gpu_fallback: bool = True

    def __post_init__(self) -> None:
        if self.int8_mode is not None:
            choice("int8_mode", self.int8_mode, ("implicit", "explicit"))
        at_least("workspace_mib", self.workspace_mib, 1)
        at_least("max_batch", self.max_batch, 1)
        at_least("percentile", self.percentile, 50.0)


@dataclass(frozen=True)
class TensorRTOptions(TrtBuildOptions):
    """Options of the TensorRT Python-API adapter."""

    #: Batch the dynamic-shape profile is tuned for.
    opt_batch: int = 1
    #: Images per calibrator batch (implicit INT8).
    calib_batch: int = DEFAULT_CALIB_BATCH
    #: Quantile of TensorRT's legacy calibrator (the percentile method), in (0, 1].
    quantile: float = DEFAULT_QUANTILE

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("opt_batch", self.opt_batch, 1)
        at_least("calib_batch", self.calib_batch, 1)
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {self.quantile}")


def read_sidecar(engine_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(engine_dir) / SIDECAR_FILE).read_text())
    except (OSError, ValueError):
        return None


def stale_reason(sidecar: dict[str, Any] | None, trt_version: str, gpu: dict[str, Any] | None) -> str | None:
    """Why a cached engine cannot be used here, or None when it can."""
    if sidecar is None:
        return "no readable engine.json beside the cached engine"
    if sidecar.get("tensorrt_version") != trt_version:
        return f"engine built by TensorRT {sidecar.get('tensorrt_version')}, this is TensorRT {trt_version}"
    if gpu is not None and (sidecar.get("gpu_name"), sidecar.get("compute_capability")) != \
            (gpu.get("name"), gpu.get("compute_capability")):
        return (f"engine built for {sidecar.get('gpu_name')} (sm {sidecar.get('compute_capability')}), "
                f"this is {gpu.get('name')} (sm {gpu.get('compute_capability')})")
    return None



def onnx_batch_dim(path: Path, input_name: str) -> int | None:
    """The input's fixed batch size, or None when the batch dimension is dynamic."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    for inp in m.graph.input:
        if inp.name == input_name:
            dims = inp.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                return int(dims[0].dim_value)
            return None
    raise UnsupportedRequest(f"{path} has no input named {input_name!r}")


def parse_target(target: str | None) -> int | None:
    """None/'gpu' -> None (GPU); 'dla', 'dla0', 'dla1' -> the DLA core index."""
    if target in (None, "", "gpu", "cuda"):
        return None
    m = re.fullmatch(r"dla(\d*)", str(target))
    if not m:
        raise UnsupportedRequest(f"unknown TensorRT target {target!r}; valid: gpu, dla, dla0, dla1")
    return int(m.group(1) or 0)


def _parser_error(err: Any) -> str:
    """An OnnxParser error as text: its description and node when the object has them."""
    desc = err.desc() if callable(getattr(err, "desc", None)) else str(err)
    node = err.node() if callable(getattr(err, "node", None)) else None
    return f"{desc} (node {node})" if node not in (None, -1) else str(desc)


# -- TensorRT objects built lazily over the imported module --------------------------------------------
def make_logger(trt: Any) -> Any:
    """An ILogger that keeps every message so failures can be explained in the record."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((severity, str(msg)))

        def errors(self) -> list[str]:
            bad = {trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR}
            return [m for s, m in self.messages if s in bad]

    return _Logger()



@register_backend("tensorrt")
class TensorRTBackend(Backend):
    """NVIDIA TensorRT engines built from the ONNX checkpoint (GPU or DLA)."""

    install_hint: ClassVar[str] = TENSORRT_INSTALL_HINT
    display_name: ClassVar[str] = "TensorRT"
    Options: ClassVar[type[BackendOptions]] = TensorRTOptions

    @classmethod
    def availability(cls) -> Availability:
        return tensorrt_availability()

    def capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "fp16", "int8"),
            calibration_methods=IMPLICIT_METHODS + ("learned",),
            granularities=("per_tensor", "per_channel"),
            targets=("gpu", "dla0", "dla1"),
        )

    # -- compile -------------------------------------------------------------------------------
    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        self.check_request(config)
        model.require_single_io(self.name)
        avail = self.availability()
        if not avail.available:
            raise BackendUnavailable(avail.explain())
        trt = import_tensorrt()
        version = str(trt.__version__)
        major = check_supported_version(version)
        cuda = CudaRuntime.load()
        gpu = cuda.device_info(0)
        dla_core = parse_target(config.target)
        opts = self.options(config)
        route = select_int8_route(model, config.calibration, config.per_channel, opts.int8_mode) \
            if config.precision == "int8" else None
        if route is not None and route.mode == "implicit" and calibration is None:
            raise UnsupportedRequest(
                "TensorRT implicit INT8 needs a calibration set and none was given; pass calibration images, "
                "or use calibration='learned' (QDQ) / int8_mode=explicit with a QDQ checkpoint")
        meta: dict[str, Any] = {
            "tensorrt_version": version, "gpu_name": gpu["name"], "compute_capability": gpu["compute_capability"],
            "cuda_bindings": cuda.flavour, "target": "gpu" if dla_core is None else f"dla{dla_core}",
        }
        if route is not None:
            meta.update(int8_mode=route.mode, int8_source=route.source, calibration_method=route.method,
                        activation_numerics="int8 symmetric (TensorRT)", activation_signed=True)

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            onnx_path, facts = Path(model.path), {}
            if route is not None and route.mode == "explicit":
                onnx_path, facts = build_qdq_graph(model, route, calibration, config.per_channel, out_dir,
                                                   opts.percentile)
            try:
                facts.update(self._build(trt, major, cuda, model, onnx_path, config, opts, route, calibration,
                                         dla_core, out_dir / ENGINE_FILE, workdir, version))
            finally:
                cuda.deactivate()  # pycuda: pop the build's context (cuda-python uses the primary one)
            sidecar = {k: meta[k] for k in ("tensorrt_version", "gpu_name", "compute_capability", "target")}
            sidecar.update(facts, precision=config.precision, model_sha256=model.sha256)
            (out_dir / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2, sort_keys=True))
            return ENGINE_FILE, facts

        uses_images = route is not None and route.source != "qdq-checkpoint"
        entry = self.cached_build(workdir, model, config, calibration if uses_images else None, version, build,
                                  gpu=gpu["name"], compute_capability=gpu["compute_capability"], dla_core=dla_core,
                                  route=None if route is None else [route.mode, route.source, route.method])
        meta.update(entry.metadata(), engine_dir=str(entry.directory))
        return CompiledModel(self.name, config.precision, entry.path, meta)

    def _build(self, trt: Any, major: int, cuda: CudaRuntime, model: ModelArtifact, onnx_path: Path,
               config: CompileConfig, opts: TensorRTOptions, route: Int8Route | None,
               calibration: np.ndarray | None, dla_core: int | None, engine_path: Path, workdir: Path,
               version: str) -> dict[str, Any]:
        """Parse, configure and build; returns the facts worth recording."""
        facts: dict[str, Any] = {}
        logger = make_logger(trt)
        cuda.activate(0)
        builder = trt.Builder(logger)
        # TensorRT 8 needs the explicit-batch flag for ONNX; in 10 it is the only mode and the flag is deprecated.
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errs = "; ".join(_parser_error(parser.get_error(i)) for i in range(parser.num_errors)) \
                or "; ".join(logger.errors())
            raise UnsupportedRequest(f"TensorRT {version}'s ONNX parser rejected {onnx_path.name}: {errs}")
        bconf = builder.create_builder_config()
        workspace_mib = opts.workspace_mib
        if hasattr(bconf, "set_memory_pool_limit"):  # 8.4+
            bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
        else:  # 8.0-8.3
            bconf.max_workspace_size = workspace_mib << 20
        facts["workspace_mib"] = workspace_mib

        if config.precision == "fp32":
            # TensorRT runs FP32 layers as TF32 on Ampere+ by default; FP32 fidelity means real FP32.
            if not opts.allow_tf32:
                bconf.clear_flag(trt.BuilderFlag.TF32)
            facts["tf32"] = opts.allow_tf32
        elif config.precision == "fp16":
            # platform_has_fast_* are deprecated in 10.x (absent = assume yes; the build then decides).
            if getattr(builder, "platform_has_fast_fp16", True) is False:
                raise UnsupportedRequest("this GPU has no fast FP16 path in TensorRT; FP16 is not supported here")
            bconf.set_flag(trt.BuilderFlag.FP16)
        elif config.precision == "int8":
            if getattr(builder, "platform_has_fast_int8", True) is False:
                raise UnsupportedRequest("this GPU has no INT8 support in TensorRT (e.g. Maxwell on Jetson Nano)")
            bconf.set_flag(trt.BuilderFlag.INT8)
            # Layers TensorRT cannot run in INT8 stay FP32 unless FP16 is allowed too (trtexec --best style).
            fp16_fallback = opts.int8_fp16_fallback if opts.int8_fp16_fallback is not None else dla_core is not None
            if fp16_fallback:
                bconf.set_flag(trt.BuilderFlag.FP16)
            facts["int8_fp16_fallback"] = fp16_fallback

        # Shapes: one optimization profile over the batch dimension (dynamic) or the fixed shape.
        inp = network.get_input(0)
        name = inp.name
        sample_shape = tuple(int(d) for d in tuple(inp.shape)[1:])
        if any(d < 1 for d in sample_shape):  # symbolic height/width: the sizes the harness fixed from the data
            sample_shape = tuple(model.static_input_shapes(1)[name][1:])
        fixed = onnx_batch_dim(onnx_path, name)
        max_batch = fixed or opts.max_batch
        if fixed is None:
            opt_batch = min(max_batch, opts.opt_batch)
            profile = builder.create_optimization_profile()
            profile.set_shape(name, (1,) + sample_shape, (opt_batch,) + sample_shape, (max_batch,) + sample_shape)
            bconf.add_optimization_profile(profile)
        facts["max_batch"] = max_batch
        facts["batch_dynamic"] = fixed is None

        calibrator = None
        if route is not None and route.mode == "implicit":
            images = np.asarray(calibration, dtype=np.float32)
            calib_batch = fixed or min(len(images), opts.calib_batch)
            if len(images) < calib_batch:
                raise UnsupportedRequest(f"the engine's fixed batch is {calib_batch} but only "
                                         f"{len(images)} calibration images were given")
            cache = calibration_cache_path(workdir, model, route.method, images, version)
            calibrator = make_calibrator(trt, route.method, images, calib_batch, cache, cuda, name,
                                         opts.quantile)
            bconf.int8_calibrator = calibrator
            if fixed is None:
                # Calibration runs at the calibration profile's OPT shape: pin it to the calibration batch.
                cprof = builder.create_optimization_profile()
                shape = (calib_batch,) + sample_shape
                cprof.set_shape(name, shape, shape, shape)
                bconf.set_calibration_profile(cprof)
            facts.update(calibration_batch=calib_batch, calibration_cache=str(cache),
                         calibration_images_used=calibrator.n_batches * calib_batch)

        if dla_core is not None:
            n_dla = int(getattr(builder, "num_DLA_cores", 0))
            if dla_core >= n_dla:
                raise UnsupportedRequest(f"DLA core {dla_core} requested but this device has {n_dla} DLA core(s)")
            if config.precision == "fp32":
                raise UnsupportedRequest("DLA runs FP16 or INT8 only; ask for fp16 or int8 with target=dla")
            bconf.default_device_type = trt.DeviceType.DLA
            bconf.DLA_core = dla_core
            gpu_fallback = opts.gpu_fallback
            if gpu_fallback:
                bconf.set_flag(trt.BuilderFlag.GPU_FALLBACK)
            facts.update(dla_core=dla_core, gpu_fallback=gpu_fallback)
            # Which network layers DLA can take, asked before the build (the engine fuses them afterwards).
            if callable(getattr(bconf, "can_run_on_DLA", None)) and hasattr(network, "num_layers"):
                layers = [network.get_layer(i) for i in range(network.num_layers)]
                on_gpu = [lyr.name for lyr in layers if not bconf.can_run_on_DLA(lyr)]
                facts.update(dla_layers=len(layers) - len(on_gpu), gpu_fallback_layers=len(on_gpu),
                             gpu_fallback_layer_names=on_gpu[:50])
                if on_gpu and not gpu_fallback:
                    raise UnsupportedRequest(f"{len(on_gpu)} layer(s) cannot run on DLA ({', '.join(on_gpu[:5])}) "
                                             "and gpu_fallback is off")

        try:
            plan = builder.build_serialized_network(network, bconf)
        except Exception as exc:  # some versions raise instead of returning None
            plan = None
            logger.messages.append((trt.ILogger.Severity.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            if calibrator is not None:
                facts.update(calibration_cache_hit=calibrator.cache_hit, calibration_batches_fed=calibrator.batches_fed)
                calibrator.release()
        if plan is None:
            errors = logger.errors()
            text = " | ".join(errors[-3:]) or "no error message from TensorRT"
            if any(_OOM_PATTERN.search(e) for e in errors):
                raise EngineBuildError(
                    f"TensorRT ran out of GPU memory building the {config.precision} engine ({text}); "
                    f"free GPU memory or lower workspace_mib (now {workspace_mib}) / max_batch (now {max_batch})")
            raise EngineBuildError(f"TensorRT {version} failed to build the {config.precision} engine: {text}")
        data = plan if isinstance(plan, (bytes, bytearray)) else bytes(memoryview(plan))
        engine_path.write_bytes(data)
        facts["engine_bytes"] = len(data)
        return facts

    # -- load ------------------------------------------------------------------------------------
    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> "TensorRTSession":
        avail = self.availability()
        if not avail.available:
            raise BackendUnavailable(avail.explain())
        trt = import_tensorrt()
        version = str(trt.__version__)
        check_supported_version(version)
        cuda = CudaRuntime.load()
        reason = stale_reason(read_sidecar(Path(compiled.path).parent), version, cuda.device_info(0))
        if reason is not None:
            raise UnsupportedRequest(f"cannot load {compiled.path}: {reason}; compile again to rebuild it")
        dla = compiled.metadata.get("dla_core")
        return TensorRTSession(Path(compiled.path), trt, cuda, dla_core=dla)


class TensorRTSession:
    """One engine, one execution context, one stream, device buffers and pinned host buffers."""

    def __init__(self, engine_path: Path, trt: Any, cuda: CudaRuntime, dla_core: int | None = None) -> None:
        self._trt = trt
        self._cuda = cuda
        self._bufs: list[Any] = []
        self._hosts: list[np.ndarray] = []
        self._stream = None
        cuda.activate(0)
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if dla_core is not None:
            self._runtime.DLA_core = int(dla_core)
        self._engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            text = " | ".join(self._logger.errors()[-2:]) or "no message"
            raise UnsupportedRequest(f"TensorRT {trt.__version__} could not deserialize {engine_path} ({text}); "
                                     "compile again to rebuild the engine")
        self._ctx = self._engine.create_execution_context()
        # TensorRT 8.5+ and 10 have the name-based I/O API; 8.0-8.4 only bindings.
        self._v3 = hasattr(self._ctx, "execute_async_v3") and hasattr(self._engine, "num_io_tensors")
        self._discover_io()
        self._stream = cuda.stream_create()
        self._set_batch(self.max_batch)
        out_shape = self._output_shape()
        self._d_in = cuda.malloc(int(np.prod((self.max_batch,) + self.sample_shape)) * np.dtype(self.in_dtype).itemsize)
        self._d_out = cuda.malloc(int(np.prod(out_shape)) * np.dtype(self.out_dtype).itemsize)
        self._bufs += [self._d_in, self._d_out]
        self._h_in = cuda.host_empty((self.max_batch,) + self.sample_shape, self.in_dtype)
        self._h_out = cuda.host_empty(out_shape, self.out_dtype)
        self._hosts += [self._h_in, self._h_out]
        self._current_batch = self.max_batch
        if self._v3:
            self._ctx.set_tensor_address(self.in_name, CudaRuntime.address(self._d_in))
            self._ctx.set_tensor_address(self.out_name, CudaRuntime.address(self._d_out))

    def _discover_io(self) -> None:
        trt, eng = self._trt, self._engine
        if self._v3:
            names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
            ins = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(ins) != 1 or not outs:
                raise UnsupportedRequest(f"the harness feeds one input and reads one output; engine has {ins} -> {outs}")
            self.in_name, self.out_name = ins[0], outs[0]
            shape = tuple(eng.get_tensor_shape(self.in_name))
            self.in_dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(self.in_name)))
            self.out_dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(self.out_name)))
            prof = None
            if shape[0] == -1:
                prof = eng.get_tensor_profile_shape(self.in_name, 0) if hasattr(eng, "get_tensor_profile_shape") \
                    else eng.get_profile_shape(0, self.in_name)  # 8.5/8.6 still accept the name here
        else:
            n = eng.num_bindings
            ins = [i for i in range(n) if eng.binding_is_input(i)]
            outs = [i for i in range(n) if not eng.binding_is_input(i)]
            if len(ins) != 1 or not outs:
                raise UnsupportedRequest("the harness feeds one input and reads one output")
            self._in_idx, self._out_idx = ins[0], outs[0]
            self.in_name, self.out_name = eng.get_binding_name(ins[0]), eng.get_binding_name(outs[0])
            shape = tuple(eng.get_binding_shape(ins[0]))
            self.in_dtype = np.dtype(trt.nptype(eng.get_binding_dtype(ins[0])))
            self.out_dtype = np.dtype(trt.nptype(eng.get_binding_dtype(outs[0])))
            prof = eng.get_profile_shape(0, ins[0]) if shape[0] == -1 else None
            self._n_bindings = n
        self.dynamic = shape[0] == -1
        self.sample_shape = tuple(int(d) for d in shape[1:])
        self.max_batch = int(tuple(prof[2])[0]) if prof is not None else int(shape[0])

    def _set_batch(self, n: int) -> None:
        if not self.dynamic:
            return
        shape = (n,) + self.sample_shape
        if self._v3:
            self._ctx.set_input_shape(self.in_name, shape)
        else:
            self._ctx.set_binding_shape(self._in_idx, shape)

    def _output_shape(self) -> tuple[int, ...]:
        if self._v3:
            return tuple(int(d) for d in self._ctx.get_tensor_shape(self.out_name))
        return tuple(int(d) for d in self._ctx.get_binding_shape(self._out_idx))

    def _execute(self) -> None:
        handle = self._cuda.stream_handle(self._stream)
        if self._v3:
            ok = self._ctx.execute_async_v3(handle)
        else:
            bindings = [0] * self._n_bindings
            bindings[self._in_idx] = CudaRuntime.address(self._d_in)
            bindings[self._out_idx] = CudaRuntime.address(self._d_out)
            ok = self._ctx.execute_async_v2(bindings, handle)
        if ok is False:
            raise RuntimeError(f"TensorRT enqueue failed: {' | '.join(self._logger.errors()[-2:])}")

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        n = chunk.shape[0]
        feed = self.max_batch if not self.dynamic else n
        if n != self._current_batch and self.dynamic:
            self._set_batch(n)
            self._current_batch = n
        self._h_in[:n] = chunk
        if feed > n:  # a fixed-batch engine: pad the tail, drop its outputs
            self._h_in[n:feed] = 0
        h_in = self._h_in[:feed]
        h_out = self._h_out[:feed]
        self._cuda.htod_async(self._d_in, h_in, self._stream)
        self._execute()
        self._cuda.dtoh_async(h_out, self._d_out, self._stream)
        self._cuda.stream_sync(self._stream)
        return h_out[:n].copy()

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = np.ascontiguousarray(single_feed(feeds, self.in_name), dtype=self.in_dtype)
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"input shape {x.shape} does not match the engine's (N,) + {self.sample_shape}")
        if x.shape[0] <= self.max_batch:
            return [self._run_chunk(x)]
        return [np.concatenate([self._run_chunk(x[i:i + self.max_batch])
                                for i in range(0, x.shape[0], self.max_batch)])]

    def synchronize(self) -> None:
        if self._stream is not None:
            self._cuda.stream_sync(self._stream)

    def close(self) -> None:
        for arr in self._hosts:
            self._cuda.host_free(arr)
        self._hosts = []
        for b in self._bufs:
            self._cuda.free(b)
        self._bufs = []
        if self._stream is not None:
            self._cuda.stream_destroy(self._stream)
            self._stream = None
        self._ctx = self._engine = None
        self._cuda.deactivate()
