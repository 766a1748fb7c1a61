"""TensorRT through its Python API: FP32, FP16 and INT8 (implicit calibrators or explicit QDQ graphs).

Supported TensorRT lines: 8.x (JetPack 5) and 10.x (JetPack 6, desktop); anything else is refused.

INT8 has two routes, both chosen explicitly and recorded in the artifact's metadata:

* implicit (``int8_mode="implicit"``, the default for entropy/minmax/percentile): TensorRT calibrates with
  ``IInt8EntropyCalibrator2`` / ``IInt8MinMaxCalibrator`` / ``IInt8LegacyCalibrator`` (quantile, the
  percentile method) fed from the calibration array in batches. The calibration cache is written to
  ``<workdir>/tensorrt/calibration/`` keyed by model hash + method + calibration-data digest + TensorRT
  version and reused on the next build (TensorRT then skips ``get_batch`` altogether).
* explicit (``int8_mode="explicit"``, and always for ``calibration="learned"``): TensorRT parses a QDQ graph.
  For ``learned`` that is the checkpoint's own QDQ export (``ModelArtifact.qdq_path``) or, failing that, an
  ONNX Runtime QDQ graph whose ranges are replaced by the learned table (``*.calib.json``); for the other
  methods an ONNX Runtime QDQ graph calibrated on the same images. TensorRT needs symmetric INT8 QDQ
  (zero point 0), so these graphs use signed symmetric activations.

Inference contract (the harness calls ``run`` then ``synchronize`` before each timestamp): ``run`` copies the
batch into pinned host memory, enqueues H2D, the engine and D2H on one CUDA stream, waits on that stream and
returns an owned copy of the output, so the returned array is valid at once and is never overwritten by the
next call. ``synchronize`` waits on the stream again (cheap when idle) so the contract also holds for callers
that only rely on it.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib
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
    artifact_dir,
    single_feed,
)
from backends.registry import register_backend

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

SUPPORTED_MAJORS = (8, 10)
TENSORRT_INSTALL_HINT = ('Jetson: sudo apt install python3-libnvinfer, pip install cuda-python; '
                         'desktop: pip install ".[tensorrt]" (docs/nvidia.md)')
IMPLICIT_METHODS = ("entropy", "minmax", "percentile")
DEFAULT_WORKSPACE_MIB = 1024
DEFAULT_MAX_BATCH = 32
DEFAULT_CALIB_BATCH = 32
#: TensorRT's legacy calibrator takes a quantile in [0, 1]; 99.99 % matches the percentile used elsewhere.
DEFAULT_QUANTILE = 0.9999
ENGINE_FILE = "model.engine"
SIDECAR_FILE = "engine.json"
_OOM_PATTERN = re.compile(
    r"out of memory|cudaErrorMemoryAllocation|OutOfMemory|insufficient (gpu )?memory|"
    r"requested amount of gpu memory|failed to allocate", re.IGNORECASE)


class EngineBuildError(RuntimeError):
    """TensorRT could not build an engine (a failure of the run, not a refused request)."""


# -- versions ------------------------------------------------------------------------------------
def parse_version(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0, 26); non-numeric parts end the tuple."""
    out: list[int] = []
    for part in str(version).split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def check_supported_version(version: str) -> int:
    """Return the major version if this adapter supports it, else refuse naming the supported lines."""
    parsed = parse_version(version)
    major = parsed[0] if parsed else -1
    if major not in SUPPORTED_MAJORS:
        raise UnsupportedRequest(
            f"TensorRT {version} is not supported by this adapter (supported: "
            f"{', '.join(f'{m}.x' for m in SUPPORTED_MAJORS)}); install TensorRT 8.x (JetPack 5) or 10.x")
    return major


def import_tensorrt():
    """The tensorrt module (a test may place a fake in sys.modules)."""
    return importlib.import_module("tensorrt")


# -- CUDA runtime (cuda-python or pycuda) --------------------------------------------------------
def _host_view(ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A numpy view of host memory at ``ptr`` (pinned memory from cudaMallocHost)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = (ctypes.c_byte * nbytes).from_address(int(ptr))
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


class CudaRuntime:
    """The few CUDA runtime calls the adapter needs, over cuda-python (``cudart``) or pycuda."""

    def __init__(self, flavour: str, module: Any) -> None:
        self.flavour = flavour
        self._m = module
        self._ctx = None
        self._host: dict[int, Any] = {}  # id(array) -> handle to free

    @classmethod
    def load(cls) -> "CudaRuntime":
        """cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6) else pycuda; ImportError if none."""
        errors = []
        for name in ("cuda.bindings.runtime", "cuda.cudart"):
            try:
                return cls("cuda-python", importlib.import_module(name))
            except (ImportError, OSError) as exc:  # OSError: a CUDA library the bindings need is missing
                errors.append(f"{name}: {exc}")
        try:
            return cls("pycuda", importlib.import_module("pycuda.driver"))
        except (ImportError, OSError) as exc:
            errors.append(f"pycuda.driver: {exc}")
        raise ImportError("no CUDA Python bindings (cuda-python or pycuda): " + "; ".join(errors))

    # cuda-python returns (err, *values); anything but cudaSuccess is an error.
    def _call(self, fn: str, *args: Any) -> Any:
        res = getattr(self._m, fn)(*args)
        err, values = res[0], res[1:]
        if err != self._m.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA {fn} failed: {err}")
        return values[0] if len(values) == 1 else (values or None)

    def device_count(self) -> int:
        if self.flavour == "pycuda":
            self._m.init()
            return int(self._m.Device.count())
        return int(self._call("cudaGetDeviceCount"))

    def device_info(self, index: int = 0) -> dict[str, Any]:
        """GPU name, compute capability and memory of one device."""
        if self.flavour == "pycuda":
            self._m.init()
            dev = self._m.Device(index)
            major, minor = dev.compute_capability()
            return {"name": dev.name(), "compute_capability": f"{major}.{minor}", "memory_bytes": dev.total_memory()}
        prop = self._call("cudaGetDeviceProperties", index)
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return {"name": name.rstrip("\x00"), "compute_capability": f"{prop.major}.{prop.minor}",
                "memory_bytes": int(prop.totalGlobalMem)}

    def activate(self, index: int = 0) -> None:
        """pycuda needs a current context; cuda-python uses the primary context implicitly."""
        if self.flavour == "pycuda" and self._ctx is None:
            self._m.init()
            self._ctx = self._m.Device(index).make_context()

    def deactivate(self) -> None:
        if self._ctx is not None:
            self._ctx.pop()
            self._ctx = None

    def malloc(self, nbytes: int) -> Any:
        if self.flavour == "pycuda":
            return self._m.mem_alloc(max(int(nbytes), 1))
        return self._call("cudaMalloc", max(int(nbytes), 1))

    def free(self, dptr: Any) -> None:
        if self.flavour == "pycuda":
            dptr.free()
        else:
            self._call("cudaFree", dptr)

    @staticmethod
    def address(dptr: Any) -> int:
        return int(dptr)

    def host_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Page-locked host memory as a numpy array (DMA-able, so H2D/D2H copies are truly async)."""
        dtype = np.dtype(dtype)
        if self.flavour == "pycuda":
            return self._m.pagelocked_empty(shape, dtype)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        ptr = self._call("cudaMallocHost", nbytes)
        arr = _host_view(ptr, shape, dtype)
        self._host[id(arr)] = ptr
        return arr

    def host_free(self, arr: np.ndarray) -> None:
        ptr = self._host.pop(id(arr), None)
        if ptr is not None:
            self._call("cudaFreeHost", ptr)

    def stream_create(self) -> Any:
        if self.flavour == "pycuda":
            return self._m.Stream()
        return self._call("cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle) if self.flavour == "pycuda" else int(stream)

    def stream_sync(self, stream: Any) -> None:
        if self.flavour == "pycuda":
            stream.synchronize()
        else:
            self._call("cudaStreamSynchronize", stream)

    def stream_destroy(self, stream: Any) -> None:
        if self.flavour != "pycuda":
            self._call("cudaStreamDestroy", stream)

    def htod_async(self, dptr: Any, host: np.ndarray, stream: Any) -> None:
        if self.flavour == "pycuda":
            self._m.memcpy_htod_async(dptr, host, stream)
        else:
            self._call("cudaMemcpyAsync", dptr, host.ctypes.data, host.nbytes,
                       self._m.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)

    def dtoh_async(self, host: np.ndarray, dptr: Any, stream: Any) -> None:
        if self.flavour == "pycuda":
            self._m.memcpy_dtoh_async(host, dptr, stream)
        else:
            self._call("cudaMemcpyAsync", host.ctypes.data, dptr, host.nbytes,
                       self._m.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)

    def htod(self, dptr: Any, host: np.ndarray) -> None:
        if self.flavour == "pycuda":
            self._m.memcpy_htod(dptr, host)
        else:
            self._call("cudaMemcpy", dptr, host.ctypes.data, host.nbytes,
                       self._m.cudaMemcpyKind.cudaMemcpyHostToDevice)


def tensorrt_availability() -> Availability:
    """TensorRT importable, a supported version, CUDA Python bindings and at least one CUDA device."""
    try:
        trt = import_tensorrt()
    except Exception as exc:  # ImportError, or a broken install raising OSError on a missing .so
        return Availability(False, f"TensorRT Python bindings are not importable ({exc})", TENSORRT_INSTALL_HINT)
    version = str(getattr(trt, "__version__", "unknown"))
    try:
        check_supported_version(version)
    except UnsupportedRequest as exc:
        return Availability(False, str(exc), TENSORRT_INSTALL_HINT, version)
    try:
        cuda = CudaRuntime.load()
    except ImportError as exc:
        return Availability(False, str(exc), "pip install cuda-python (matching the CUDA major version)", version)
    try:
        count = cuda.device_count()
    except Exception as exc:
        return Availability(False, f"no usable CUDA device ({exc})",
                            "needs an NVIDIA GPU with its driver loaded (nvidia-smi / JetPack)", version)
    if count < 1:
        return Availability(False, "no CUDA device found", "needs an NVIDIA GPU with its driver loaded", version)
    return Availability(True, version=version)


# -- keys, caches, sidecars --------------------------------------------------------------------------
def array_digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()[:16]


def calibration_cache_path(workdir: Path, model: ModelArtifact, method: str, calib_digest: str,
                           trt_version: str) -> Path:
    """Where TensorRT's calibration cache for (model, method, data, TensorRT version) lives.

    Shared by every engine of the same model and data (GPU, DLA, trtexec), which is what makes reuse pay.
    The TensorRT version is part of the key because the cache's header names it and TensorRT rejects others.
    """
    d = Path(workdir) / "tensorrt" / "calibration"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{model.sha256[:16]}-{method}-{calib_digest}-trt{trt_version}.cache"


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


# -- INT8 route selection ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Int8Route:
    """How an INT8 engine gets its scales."""

    mode: str              # "implicit" | "explicit"
    source: str            # "calibrator" | "qdq-checkpoint" | "qdq-learned-table" | "qdq-ort"
    method: str            # calibration method


def select_int8_route(model: ModelArtifact, config: CompileConfig) -> Int8Route:
    """Choose the INT8 route for a request, or refuse saying what is missing."""
    method = config.calibration or "entropy"
    mode = str(config.option("int8_mode", "explicit" if method == "learned" else "implicit"))
    if mode not in ("implicit", "explicit"):
        raise UnsupportedRequest(f"unknown int8_mode {mode!r}; valid: implicit, explicit")
    if method == "learned":
        if mode == "implicit":
            raise UnsupportedRequest("learned scales reach TensorRT only through a QDQ graph; use int8_mode=explicit")
        if model.qdq_path is not None and Path(model.qdq_path).exists():
            return Int8Route("explicit", "qdq-checkpoint", method)
        if model.calibration_table is not None and Path(model.calibration_table).exists():
            return Int8Route("explicit", "qdq-learned-table", method)
        raise UnsupportedRequest(
            f"checkpoint {model.name} has neither a QDQ export (qdq_path) nor a learned calibration table "
            "(*.calib.json); calibration='learned' needs one of them")
    if method not in IMPLICIT_METHODS:
        raise UnsupportedRequest(f"TensorRT has no {method!r} calibration; it has: {', '.join(IMPLICIT_METHODS)}, learned")
    if mode == "implicit":
        if not config.per_channel:
            raise UnsupportedRequest("TensorRT's implicit INT8 always quantizes weights per channel; "
                                     "use int8_mode=explicit for per-tensor weights")
        return Int8Route("implicit", "calibrator", method)
    return Int8Route("explicit", "qdq-ort", method)


def build_qdq_graph(model: ModelArtifact, route: Int8Route, calibration: np.ndarray | None, per_channel: bool,
                    out_dir: Path, percentile: float = 99.999) -> Path:
    """The QDQ ONNX graph an explicit-INT8 route parses (built once per artifact directory)."""
    if route.source == "qdq-checkpoint":
        return Path(model.qdq_path)  # type: ignore[arg-type]
    dst = Path(out_dir) / "model.qdq.onnx"
    if dst.exists():
        return dst
    if calibration is None:
        raise UnsupportedRequest(
            "explicit INT8 builds its QDQ graph from calibration images (learned tables replace their ranges); "
            "none were given")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from backends.onnxruntime_backend import _preprocess, apply_learned_ranges, compute_ranges

    pre = _preprocess(Path(model.path), Path(out_dir) / "preprocessed.onnx")
    base = "minmax" if route.method == "learned" else route.method
    # TensorRT accepts only symmetric INT8 QDQ (zero point 0): signed activations, symmetric ranges.
    ranges, ort_method = compute_ranges(pre, model.input_name, calibration, base, symmetric=True,
                                        percentile=percentile)
    if route.source == "qdq-learned-table":
        if apply_learned_ranges(ranges, Path(model.calibration_table)) == 0:  # type: ignore[arg-type]
            raise UnsupportedRequest(f"no tensor of {model.calibration_table} names a tensor of the graph")
    cache = Path(out_dir) / f"qdq-ranges-{route.method}.json"
    save_tensors_data(ranges, cache)
    quantize_static(str(pre), str(dst), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=ort_method, calibration_cache_path=str(cache),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return dst


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


def make_calibrator(trt: Any, method: str, images: np.ndarray, batch: int, cache_path: Path,
                    cuda: CudaRuntime, input_name: str, quantile: float = DEFAULT_QUANTILE) -> Any:
    """A TensorRT INT8 calibrator over ``images`` (NCHW float32) in batches of ``batch``.

    Only whole batches are fed (TensorRT requires the declared batch size); a cache at ``cache_path``
    short-circuits calibration, and the cache TensorRT writes is stored there.
    """
    bases = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator",
             "percentile": "IInt8LegacyCalibrator"}
    base = getattr(trt, bases[method], None)
    if base is None:
        raise UnsupportedRequest(f"TensorRT {trt.__version__} has no {bases[method]} ({method} calibration)")

    class _Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.images = np.ascontiguousarray(images, dtype=np.float32)
            self.batch = int(batch)
            self.n_batches = len(self.images) // self.batch
            self.cursor = 0
            self.cache_path = Path(cache_path)
            self.cache_hit = False
            self.batches_fed = 0
            self._dev = cuda.malloc(self.batch * self.images[0].nbytes)

        def get_batch_size(self) -> int:
            return self.batch

        def get_batch(self, names: list[str], *unused: Any) -> list[int] | None:
            if self.cursor >= self.n_batches:
                return None
            chunk = self.images[self.cursor * self.batch:(self.cursor + 1) * self.batch]
            cuda.htod(self._dev, np.ascontiguousarray(chunk))
            self.cursor += 1
            self.batches_fed += 1
            return [CudaRuntime.address(self._dev) for _ in names]

        def read_calibration_cache(self, *unused: Any) -> bytes | None:
            if self.cache_path.exists():
                self.cache_hit = True
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any, *unused: Any) -> None:
            self.cache_path.write_bytes(bytes(memoryview(cache)) if not isinstance(cache, bytes) else cache)

        # IInt8LegacyCalibrator (the quantile/percentile method) also asks for these.
        def get_quantile(self) -> float:
            return float(quantile)

        def get_regression_cutoff(self) -> float:
            return 1.0

        def read_histogram_cache(self, *unused: Any) -> None:
            return None

        def write_histogram_cache(self, *unused: Any) -> None:
            return None

        def release(self) -> None:
            if self._dev is not None:
                cuda.free(self._dev)
                self._dev = None

    return _Calibrator()


@register_backend("tensorrt")
class TensorRTBackend(Backend):
    """NVIDIA TensorRT engines built from the ONNX checkpoint (GPU or DLA)."""

    install_hint: ClassVar[str] = TENSORRT_INSTALL_HINT
    display_name: ClassVar[str] = "TensorRT"

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
        route = select_int8_route(model, config) if config.precision == "int8" else None
        if route is not None and route.mode == "implicit" and calibration is None:
            raise UnsupportedRequest(
                "TensorRT implicit INT8 needs a calibration set and none was given; pass calibration images, "
                "or use calibration='learned' (QDQ) / int8_mode=explicit with a QDQ checkpoint")
        calib_digest = array_digest(calibration) if calibration is not None else "none"
        src_sha = ""
        if route is not None and route.source == "qdq-checkpoint":
            from backends.base import file_sha256

            src_sha = file_sha256(model.qdq_path)  # type: ignore[arg-type]
        extra = (f"trt={version}|gpu={gpu['name']}|sm={gpu['compute_capability']}|dla={dla_core}|"
                 f"route={route}|calib={calib_digest}|qdq={src_sha}")
        out_dir = artifact_dir(workdir, self.name, model, config, extra)
        engine_path = out_dir / ENGINE_FILE
        meta: dict[str, Any] = {
            "tensorrt_version": version, "gpu_name": gpu["name"], "compute_capability": gpu["compute_capability"],
            "cuda_bindings": cuda.flavour, "target": "gpu" if dla_core is None else f"dla{dla_core}",
            "engine_dir": str(out_dir),
        }
        if route is not None:
            meta.update(int8_mode=route.mode, int8_source=route.source, calibration_method=route.method,
                        activation_numerics="int8 symmetric (TensorRT)")
        if engine_path.exists():
            reason = stale_reason(read_sidecar(out_dir), version, gpu)
            if reason is None:
                sidecar = read_sidecar(out_dir) or {}
                meta.update({k: v for k, v in sidecar.items() if k not in meta})
                meta["cached"] = True
                return CompiledModel(self.name, config.precision, engine_path, meta)
            meta["rebuilt_reason"] = reason
            engine_path.unlink()
        meta["cached"] = False

        onnx_path = Path(model.path)
        if route is not None and route.mode == "explicit":
            onnx_path = build_qdq_graph(model, route, calibration, config.per_channel, out_dir,
                                        float(config.option("percentile", 99.999)))
        try:
            build_facts = self._build(trt, major, cuda, model, onnx_path, config, route, calibration, calib_digest,
                                      dla_core, engine_path, workdir, version)
        finally:
            cuda.deactivate()  # pycuda: pop the build's context (cuda-python uses the primary one)
        meta.update(build_facts)
        sidecar = {k: meta[k] for k in ("tensorrt_version", "gpu_name", "compute_capability", "target")}
        sidecar.update(build_facts, precision=config.precision, model_sha256=model.sha256)
        (out_dir / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2, sort_keys=True))
        return CompiledModel(self.name, config.precision, engine_path, meta)

    def _build(self, trt: Any, major: int, cuda: CudaRuntime, model: ModelArtifact, onnx_path: Path,
               config: CompileConfig, route: Int8Route | None, calibration: np.ndarray | None, calib_digest: str,
               dla_core: int | None, engine_path: Path, workdir: Path, version: str) -> dict[str, Any]:
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
        workspace_mib = int(config.option("workspace_mib", DEFAULT_WORKSPACE_MIB))
        if hasattr(bconf, "set_memory_pool_limit"):  # 8.4+
            bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
        else:  # 8.0-8.3
            bconf.max_workspace_size = workspace_mib << 20
        facts["workspace_mib"] = workspace_mib

        if config.precision == "fp32":
            # TensorRT runs FP32 layers as TF32 on Ampere+ by default; FP32 fidelity means real FP32.
            if not bool(config.option("allow_tf32", False)):
                bconf.clear_flag(trt.BuilderFlag.TF32)
            facts["tf32"] = bool(config.option("allow_tf32", False))
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
            fp16_fallback = bool(config.option("int8_fp16_fallback", dla_core is not None))
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
        max_batch = fixed or max(1, int(config.option("max_batch", DEFAULT_MAX_BATCH)))
        if fixed is None:
            opt_batch = min(max_batch, max(1, int(config.option("opt_batch", 1))))
            profile = builder.create_optimization_profile()
            profile.set_shape(name, (1,) + sample_shape, (opt_batch,) + sample_shape, (max_batch,) + sample_shape)
            bconf.add_optimization_profile(profile)
        facts["max_batch"] = max_batch
        facts["batch_dynamic"] = fixed is None

        calibrator = None
        if route is not None and route.mode == "implicit":
            images = np.asarray(calibration, dtype=np.float32)
            calib_batch = fixed or min(len(images), max(1, int(config.option("calib_batch", DEFAULT_CALIB_BATCH))))
            if len(images) < calib_batch:
                raise UnsupportedRequest(f"the engine's fixed batch is {calib_batch} but only "
                                         f"{len(images)} calibration images were given")
            cache = calibration_cache_path(workdir, model, route.method, calib_digest, version)
            calibrator = make_calibrator(trt, route.method, images, calib_batch, cache, cuda, name,
                                         float(config.option("quantile", DEFAULT_QUANTILE)))
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
            gpu_fallback = bool(config.option("gpu_fallback", True))
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
