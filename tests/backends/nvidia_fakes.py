"""Fakes of the NVIDIA Python APIs the TensorRT adapter uses, for tests on hosts without a GPU.

``make_fake_tensorrt`` builds a module with the same names and call shapes as ``tensorrt`` 8.x/10.x
(Builder, network, OnnxParser, BuilderConfig flags, calibrator base classes, Runtime, engine, execution
context) and records what the adapter asked for. ``make_fake_cudart`` builds a module shaped like
cuda-python's ``cuda.bindings.runtime`` (every call returns ``(err, *values)``) over real host memory, so
pointers, pinned buffers and copies behave like the real thing. The fake engine computes
``out[n, k] = (k + 1) * sum(x[n])`` so tests can check outputs end to end.
"""
from __future__ import annotations

import ctypes
import enum
import json
import sys
import types
from typing import Any

import numpy as np

N_OUT = 10
#: Op types the fake DLA cannot take (so GPU fallback has something to report).
DLA_UNSUPPORTED = {"Gemm", "Flatten"}


# -- cuda-python runtime -----------------------------------------------------------------------
def make_fake_cudart(device_count: int = 1, gpu_name: str = "Orin", cc: tuple[int, int] = (8, 7)) -> types.ModuleType:
    m = types.ModuleType("cuda.bindings.runtime")

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorNoDevice = 100

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToHost = 0
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    m.cudaError_t = cudaError_t
    m.cudaMemcpyKind = cudaMemcpyKind
    m.memory: dict[int, np.ndarray] = {}
    m.pinned: set[int] = set()
    m.calls: list[str] = []
    m.streams = 0
    ok = cudaError_t.cudaSuccess

    def _alloc(n: int) -> int:
        buf = np.zeros(int(n), dtype=np.uint8)
        ptr = buf.ctypes.data
        m.memory[ptr] = buf
        return ptr

    def cudaGetDeviceCount():
        m.calls.append("cudaGetDeviceCount")
        if device_count == 0:
            return (cudaError_t.cudaErrorNoDevice, 0)
        return (ok, device_count)

    def cudaGetDeviceProperties(index):
        prop = types.SimpleNamespace(name=gpu_name.encode(), major=cc[0], minor=cc[1], totalGlobalMem=8 << 30)
        return (ok, prop)

    def cudaMalloc(n):
        m.calls.append("cudaMalloc")
        return (ok, _alloc(n))

    def cudaMallocHost(n):
        m.calls.append("cudaMallocHost")
        ptr = _alloc(n)
        m.pinned.add(ptr)
        return (ok, ptr)

    def cudaFree(ptr):
        m.calls.append("cudaFree")
        return (ok,) if m.memory.pop(int(ptr), None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    def cudaFreeHost(ptr):
        m.calls.append("cudaFreeHost")
        m.pinned.discard(int(ptr))
        return (ok,) if m.memory.pop(int(ptr), None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    def cudaMemcpy(dst, src, n, kind):
        m.calls.append(f"cudaMemcpy:{cudaMemcpyKind(kind).name}")
        ctypes.memmove(int(dst), int(src), int(n))
        return (ok,)

    def cudaMemcpyAsync(dst, src, n, kind, stream):
        m.calls.append(f"cudaMemcpyAsync:{cudaMemcpyKind(kind).name}")
        ctypes.memmove(int(dst), int(src), int(n))
        return (ok,)

    def cudaStreamCreate():
        m.streams += 1
        return (ok, 1000 + m.streams)

    def cudaStreamSynchronize(stream):
        m.calls.append("cudaStreamSynchronize")
        return (ok,)

    def cudaStreamDestroy(stream):
        m.calls.append("cudaStreamDestroy")
        return (ok,)

    for fn in (cudaGetDeviceCount, cudaGetDeviceProperties, cudaMalloc, cudaMallocHost, cudaFree, cudaFreeHost,
               cudaMemcpy, cudaMemcpyAsync, cudaStreamCreate, cudaStreamSynchronize, cudaStreamDestroy):
        setattr(m, fn.__name__, fn)
    return m


# -- tensorrt ----------------------------------------------------------------------------------
class FakeState:
    """What the adapter asked TensorRT for, across every object of one fake module."""

    def __init__(self) -> None:
        self.network_flags: list[int] = []
        self.builds: list[dict[str, Any]] = []
        self.calibrator_calls: list[str] = []
        self.parsed: list[str] = []
        self.deserialized = 0


def make_fake_tensorrt(version: str = "10.3.0", *, oom: bool = False, fast_int8: bool = True,
                       num_dla: int = 0, legacy_calibrator: bool = True, run_model: bool = False) -> types.ModuleType:
    """A fake ``tensorrt``; ``version`` 8.x below 8.5 exposes only the bindings API (execute_async_v2).

    With ``run_model`` the engine computes the parsed ONNX graph (through ONNX Runtime on the CPU)
    instead of the checkable formula, so harness-level fidelity can be compared with the reference.
    """
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    state = FakeState()
    trt._state = state
    major, minor = (int(p) for p in version.split(".")[:2])
    v3_api = major >= 10 or (major == 8 and minor >= 5)

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

    ILogger.Severity = Severity
    trt.ILogger = ILogger

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 5

    class BuilderFlag(enum.IntEnum):
        FP16 = 0
        INT8 = 1
        DEBUG = 2
        GPU_FALLBACK = 3
        TF32 = 6

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    class DeviceType(enum.IntEnum):
        GPU = 0
        DLA = 1

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class DataType(enum.IntEnum):
        FLOAT = 0
        HALF = 1
        INT8 = 2

    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    trt.BuilderFlag = BuilderFlag
    trt.MemoryPoolType = MemoryPoolType
    trt.DeviceType = DeviceType
    trt.TensorIOMode = TensorIOMode
    trt.DataType = DataType
    trt.nptype = lambda dt: {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8}[dt]

    class IInt8Calibrator:
        algorithm = "base"

        def __init__(self) -> None:
            pass

    def _calib_class(name: str) -> type:
        return type(name, (IInt8Calibrator,), {"algorithm": name})

    trt.IInt8Calibrator = IInt8Calibrator
    trt.IInt8EntropyCalibrator2 = _calib_class("IInt8EntropyCalibrator2")
    trt.IInt8MinMaxCalibrator = _calib_class("IInt8MinMaxCalibrator")
    if legacy_calibrator:
        trt.IInt8LegacyCalibrator = _calib_class("IInt8LegacyCalibrator")

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []
            self.has_qdq = False
            self.layers: list = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

        @property
        def num_layers(self) -> int:
            return len(self.layers)

        def get_layer(self, i: int):
            return self.layers[i]

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_output(self, i: int) -> Tensor:
            return self.outputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network, self.errors = network, []

        def parse_from_file(self, path: str) -> bool:
            import onnx

            state.parsed.append(path)
            self.network.source = path
            try:
                model = onnx.load(path)
            except Exception as exc:
                text = f"cannot read {path}: {type(exc).__name__}"
                self.errors.append(types.SimpleNamespace(desc=lambda: text, node=lambda: -1))
                return False
            for vi, dest in ((model.graph.input[0], self.network.inputs), (model.graph.output[0], self.network.outputs)):
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
                dest.append(Tensor(vi.name, dims))
            self.network.has_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
            self.network.layers = [types.SimpleNamespace(name=n.name or f"{n.op_type}_{i}", type=n.op_type)
                                   for i, n in enumerate(model.graph.node)]
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

    trt.OnnxParser = OnnxParser

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name, mn, opt, mx) -> None:
            self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))

    class BuilderConfig:
        def __init__(self) -> None:
            self.flags = {BuilderFlag.TF32}  # TF32 is on by default in TensorRT 8/10
            self.pools: dict[Any, int] = {}
            self.int8_calibrator = None
            self.profiles: list[Profile] = []
            self.calibration_profile = None
            self.default_device_type = DeviceType.GPU
            self.DLA_core = -1

        def set_flag(self, f) -> None:
            self.flags.add(f)

        def clear_flag(self, f) -> None:
            self.flags.discard(f)

        def get_flag(self, f) -> bool:
            return f in self.flags

        def set_memory_pool_limit(self, pool, size) -> None:
            self.pools[pool] = size

        def add_optimization_profile(self, p: Profile) -> int:
            self.profiles.append(p)
            return len(self.profiles) - 1

        def can_run_on_DLA(self, layer) -> bool:
            return layer.type not in DLA_UNSUPPORTED

        def set_calibration_profile(self, p: Profile) -> bool:
            self.calibration_profile = p
            return True

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.platform_has_fast_fp16 = True
            self.platform_has_fast_int8 = fast_int8
            self.num_DLA_cores = num_dla

        def create_network(self, flags: int = 0) -> Network:
            state.network_flags.append(flags)
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig):
            record = {"flags": sorted(f.name for f in config.flags), "workspace": config.pools.get(MemoryPoolType.WORKSPACE),
                      "calibrator": None, "qdq": network.has_qdq, "device": config.default_device_type.name,
                      "dla_core": config.DLA_core, "profiles": [p.shapes for p in config.profiles],
                      "calibration_profile": config.calibration_profile.shapes if config.calibration_profile else None}
            state.builds.append(record)
            if oom:
                self.logger.log(Severity.ERROR, "1: [defaultAllocator.cpp::allocate::20] Error Code 1: Cuda Runtime "
                                                "(out of memory)")
                self.logger.log(Severity.ERROR, "2: [builder.cpp::buildSerializedNetwork::751] Error Code 2: "
                                                "Internal Error (Assertion engine != nullptr failed. )")
                return None
            cal = config.int8_calibrator
            if BuilderFlag.INT8 in config.flags and cal is not None and not network.has_qdq:
                record["calibrator"] = type(cal).__mro__[1].__name__
                state.calibrator_calls.append("read_calibration_cache")
                cache = cal.read_calibration_cache()
                if cache is None:
                    names = [network.get_input(0).name]
                    n = 0
                    state.calibrator_calls.append(f"get_batch_size={cal.get_batch_size()}")
                    while cal.get_batch(names) is not None:
                        n += 1
                    state.calibrator_calls.append(f"get_batch x{n}")
                    if type(cal).__mro__[1].__name__ == "IInt8LegacyCalibrator":
                        state.calibrator_calls.append(f"get_quantile={cal.get_quantile()}")
                    state.calibrator_calls.append("write_calibration_cache")
                    cal.write_calibration_cache(f"TRT-{version}-{record['calibrator']}\n".encode())
            inp, out = network.get_input(0), network.get_output(0)
            header = {"version": version, "input": inp.name, "in_shape": list(inp.shape), "output": out.name,
                      "onnx": getattr(network, "source", None),
                      "profiles": [{k: [list(s) for s in v] for k, v in p.shapes.items()} for p in config.profiles]}
            return memoryview(b"FAKEPLAN" + json.dumps(header).encode())

    trt.Builder = Builder

    class Context:
        def __init__(self, engine: "Engine") -> None:
            self.engine = engine
            self.in_shape = tuple(engine.in_shape)
            self.addresses: dict[str, int] = {}
            self.executions = 0

        def _out_shape(self) -> tuple[int, ...]:
            return (self.in_shape[0], N_OUT)

        def _compute(self, in_ptr: int, out_ptr: int) -> bool:
            shape = self.in_shape
            count = int(np.prod(shape))
            x = np.frombuffer((ctypes.c_float * count).from_address(in_ptr), dtype=np.float32).reshape(shape)
            y = np.frombuffer((ctypes.c_float * (shape[0] * N_OUT)).from_address(out_ptr), dtype=np.float32)
            if run_model:
                y[:] = self.engine.model_session().run(None, {self.engine.in_name: x.copy()})[0].ravel()
            else:
                y[:] = (x.reshape(shape[0], -1).sum(axis=1)[:, None] * np.arange(1, N_OUT + 1, dtype=np.float32)).ravel()
            self.executions += 1
            return True

        # 8.5+/10.x name-based API
        def set_input_shape(self, name: str, shape) -> bool:
            self.in_shape = tuple(shape)
            return True

        def get_tensor_shape(self, name: str):
            return self.in_shape if name == self.engine.in_name else self._out_shape()

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            return self._compute(self.addresses[self.engine.in_name], self.addresses[self.engine.out_name])

        # 8.0-8.4 bindings API
        def set_binding_shape(self, index: int, shape) -> bool:
            self.in_shape = tuple(shape)
            return True

        def get_binding_shape(self, index: int):
            return self.in_shape if index == 0 else self._out_shape()

        def execute_async_v2(self, bindings, stream_handle) -> bool:
            return self._compute(bindings[0], bindings[1])

    if not v3_api:
        del Context.set_input_shape, Context.get_tensor_shape, Context.set_tensor_address, Context.execute_async_v3

    class Engine:
        def __init__(self, header: dict[str, Any]) -> None:
            self.in_name, self.out_name = header["input"], header["output"]
            self.in_shape = tuple(header["in_shape"])
            self.profile = header["profiles"][0][self.in_name] if header["profiles"] else None
            self.onnx = header.get("onnx")
            self._sess = None

        def model_session(self):
            if self._sess is None:
                import onnxruntime as ort

                self._sess = ort.InferenceSession(self.onnx, providers=["CPUExecutionProvider"])
            return self._sess

        def create_execution_context(self) -> Context:
            return Context(self)

        def _profile(self):
            return tuple(tuple(s) for s in self.profile)

    if v3_api:
        Engine.num_io_tensors = 2
        Engine.get_tensor_name = lambda self, i: [self.in_name, self.out_name][i]
        Engine.get_tensor_mode = lambda self, n: TensorIOMode.INPUT if n == self.in_name else TensorIOMode.OUTPUT
        Engine.get_tensor_dtype = lambda self, n: DataType.FLOAT
        Engine.get_tensor_shape = lambda self, n: self.in_shape if n == self.in_name else (self.in_shape[0], N_OUT)
        Engine.get_tensor_profile_shape = lambda self, n, p: self._profile()
    else:
        Engine.num_bindings = 2
        Engine.get_binding_name = lambda self, i: [self.in_name, self.out_name][i]
        Engine.binding_is_input = lambda self, i: i == 0
        Engine.get_binding_dtype = lambda self, i: DataType.FLOAT
        Engine.get_binding_shape = lambda self, i: self.in_shape if i == 0 else (self.in_shape[0], N_OUT)
        Engine.get_profile_shape = lambda self, p, i: self._profile()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.DLA_core = -1

        def deserialize_cuda_engine(self, data: bytes):
            state.deserialized += 1
            header = json.loads(bytes(data)[len(b"FAKEPLAN"):])
            if header["version"] != version:
                self.logger.log(Severity.ERROR, "1: [stdArchiveReader.cpp::StdArchiveReader::42] Error Code 1: "
                                                f"Serialization (The engine plan file is not compatible with this "
                                                f"version of TensorRT, expecting library version {version} got "
                                                f"{header['version']})")
                return None
            return Engine(header)

    trt.Runtime = Runtime
    return trt


def install(monkeypatch, trt: types.ModuleType | None, cudart: types.ModuleType | None) -> None:
    """Put the fakes where the adapter imports them (None removes the module, as if not installed)."""
    for name, mod in (("tensorrt", trt), ("cuda.bindings.runtime", cudart)):
        if mod is None:
            monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
        else:
            monkeypatch.setitem(sys.modules, name, mod)
    for name in ("cuda.cudart", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)


# -- small models ------------------------------------------------------------------------------
def make_onnx_model(path, batch: int | None = None, c_out: int = 4):
    """A tiny Conv-ReLU-GAP-Gemm classifier: input "input" [N,1,28,28] -> "logits" [N,10] (opset 17)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    n = batch if batch is not None else "N"
    w = numpy_helper.from_array(rng.normal(0, 0.3, (c_out, 1, 3, 3)).astype(np.float32), "conv_w")
    b = numpy_helper.from_array(np.zeros(c_out, np.float32), "conv_b")
    fw = numpy_helper.from_array(rng.normal(0, 0.3, (c_out, N_OUT)).astype(np.float32), "fc_w")
    fb = numpy_helper.from_array(np.zeros(N_OUT, np.float32), "fc_b")
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, N_OUT])], [w, b, fw, fb])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_artifact(path, **kw):
    from tests.backends.tiny_onnx import artifact

    return artifact(path, **kw)


def expected_output(x: np.ndarray) -> np.ndarray:
    """What the fake engine computes."""
    return x.reshape(len(x), -1).sum(axis=1)[:, None] * np.arange(1, N_OUT + 1, dtype=np.float32)


def make_fake_pycuda(gpu_name: str = "Orin", cc: tuple[int, int] = (8, 7)) -> types.ModuleType:
    """A fake ``pycuda.driver`` over real host memory (DeviceAllocation, pagelocked_empty, Stream, contexts)."""
    m = types.ModuleType("pycuda.driver")
    m.events: list[str] = []

    class DeviceAllocation:
        def __init__(self, n: int) -> None:
            self.buf = np.zeros(int(n), np.uint8)

        def __int__(self) -> int:
            return self.buf.ctypes.data

        def free(self) -> None:
            m.events.append("free")

    class Context:
        def pop(self) -> None:
            m.events.append("pop")

    class Device:
        def __init__(self, i: int) -> None:
            self.i = i

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return gpu_name

        def compute_capability(self) -> tuple[int, int]:
            return cc

        def total_memory(self) -> int:
            return 4 << 30

        def make_context(self) -> Context:
            m.events.append("make_context")
            return Context()

    class Stream:
        handle = 77

        def synchronize(self) -> None:
            m.events.append("synchronize")

    def _addr(x) -> int:
        return x.ctypes.data if isinstance(x, np.ndarray) else int(x)

    def _copy(dst, src) -> None:
        n = src.nbytes if isinstance(src, np.ndarray) else dst.nbytes
        ctypes.memmove(_addr(dst), _addr(src), n)

    m.init = lambda: None
    m.Device, m.Stream, m.DeviceAllocation = Device, Stream, DeviceAllocation
    m.mem_alloc = DeviceAllocation
    m.pagelocked_empty = lambda shape, dtype: np.zeros(shape, dtype)
    m.memcpy_htod = lambda d, h: _copy(d, h)
    m.memcpy_htod_async = lambda d, h, s: _copy(d, h)
    m.memcpy_dtoh_async = lambda h, d, s: _copy(h, d)
    return m
