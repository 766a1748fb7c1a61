"""Backend adapters. Importing this package registers every built-in adapter.

Each adapter module imports its vendor SDK lazily, so importing this package never needs an SDK.
"""
from __future__ import annotations

from backends.base import Availability, Backend, BackendUnavailable, Capabilities, CompileConfig, CompiledModel
from backends.base import ModelArtifact, RuntimeConfig, Session, UnsupportedRequest
from backends.registry import REGISTRY, backend_names, create_backend, get_backend, register_backend

# Built-in adapters (order is irrelevant; each registers itself).
from backends import onnxruntime_backend  # noqa: F401,E402
from backends import emulated_backend  # noqa: F401,E402
from backends import openvino_backend  # noqa: F401,E402
from backends import rknn_backend  # noqa: F401,E402
from backends import tvm_backend  # noqa: F401,E402
from backends import litert_backend  # noqa: F401,E402
from backends import tensorrt_backend  # noqa: F401,E402
from backends import onnxruntime_gpu  # noqa: F401,E402
from backends import trtexec_backend  # noqa: F401,E402
from backends import qnn_backend  # noqa: F401,E402
from backends import vela_backend  # noqa: F401,E402
from backends import tpu_mlir_backend  # noqa: F401,E402

__all__ = [
    "Availability", "Backend", "BackendUnavailable", "Capabilities", "CompileConfig", "CompiledModel",
    "ModelArtifact", "RuntimeConfig", "Session", "UnsupportedRequest", "REGISTRY", "backend_names", "create_backend",
    "get_backend", "register_backend",
]
