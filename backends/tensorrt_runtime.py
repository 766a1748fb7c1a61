"""TensorRT's Python module and the CUDA runtime the TensorRT adapters need (cuda-python or pycuda).

Supported TensorRT lines: 8.x (JetPack 5) and 10.x (JetPack 6, desktop); anything else is refused. Everything
here imports its SDK lazily (a test may place fakes in ``sys.modules``).
"""
from __future__ import annotations

import ctypes
import importlib
import re
from typing import Any

import numpy as np

from backends.base import Availability, UnsupportedRequest

SUPPORTED_MAJORS = (8, 10)
TENSORRT_INSTALL_HINT = ('Jetson: sudo apt install python3-libnvinfer, pip install cuda-python; '
                         'desktop: pip install ".[tensorrt]" (docs/nvidia.md)')


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
