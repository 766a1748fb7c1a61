"""TensorRT through its Python API: FP32, FP16 and INT8 (implicit calibrators or explicit QDQ graphs).

The CUDA runtime and TensorRT's version checks live in :mod:`backends.tensorrt_runtime`, the INT8 routes and
calibrators in :mod:`backends.tensorrt_int8`, the engine session (and its inference contract) in
:mod:`backends.tensorrt_session`; this module is the adapter: options, engine cache facts, the build.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from backends.base import Availability, Backend, BackendUnavailable, Capabilities, CompileConfig, CompiledModel
from backends.base import ModelArtifact, RuntimeConfig, UnsupportedRequest
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
    make_logger,
    parse_version,
    tensorrt_availability,
)
from backends.tensorrt_session import TensorRTSession  # noqa: F401  (re-exported for the trtexec adapter)
from devices.choices import unknown_name

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
        raise UnsupportedRequest(unknown_name("TensorRT target", target, ("gpu", "dla", "dla0", "dla1")))
    return int(m.group(1) or 0)


def _parser_error(err: Any) -> str:
    """An OnnxParser error as text: its description and node when the object has them."""
    desc = err.desc() if callable(getattr(err, "desc", None)) else str(err)
    node = err.node() if callable(getattr(err, "node", None)) else None
    return f"{desc} (node {node})" if node not in (None, -1) else str(desc)


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
