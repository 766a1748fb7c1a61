"""ONNX Runtime on NVIDIA GPUs: the CUDA and the TensorRT execution providers (needs onnxruntime-gpu).

ONNX Runtime silently falls back to the CPU provider when a GPU provider cannot load (a missing cuDNN or
TensorRT library is only a log line). These adapters open the session, read back the providers it really
uses, record them, and refuse when the requested provider is not the first one: a CPU timing must never be
filed as a GPU one.

``run`` returns host arrays (ORT copies outputs back before returning), so the work is finished when it
returns and ``synchronize`` has nothing left to wait for.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from backends.base import Availability, Capabilities, CompileConfig, CompiledModel, ModelArtifact, RuntimeConfig
from backends.base import UnsupportedRequest
from backends.onnxruntime_backend import OnnxRuntimeBackend, OrtOptions, OrtSession
from backends.options import BackendOptions, choice
from backends.registry import register_backend

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile

GPU_INSTALL_HINT = ('pip uninstall onnxruntime && pip install ".[gpu]" (onnxruntime-gpu + its CUDA/cuDNN libs); '
                    'Jetson: the onnxruntime-gpu wheel for your JetPack (docs/nvidia.md)')


def check_session_providers(requested: str, used: list[str]) -> None:
    """Refuse when ONNX Runtime did not put the requested provider first (it fell back)."""
    if not used or used[0] != requested:
        raise UnsupportedRequest(
            f"ONNX Runtime fell back from {requested}: the session uses {', '.join(used) or 'no provider'} "
            "(the GPU provider failed to load; check the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs)")


@dataclass(frozen=True)
class OrtTensorRTOptions(OrtOptions):
    """onnxruntime-tensorrt options: the ORT ones plus the INT8 route (explicit QDQ only)."""

    int8_mode: str = "explicit"

    def __post_init__(self) -> None:
        super().__post_init__()
        choice("int8_mode", self.int8_mode, ("explicit", "implicit"))


class _OrtGpuBackend(OnnxRuntimeBackend):
    """Shared behaviour: probe the providers a session really uses, at compile time and at load time."""

    install_hint: ClassVar[str] = GPU_INSTALL_HINT

    @classmethod
    def availability(cls) -> Availability:
        avail = super().availability()
        if not avail.available and avail.version is not None:
            return Availability(False, avail.reason, GPU_INSTALL_HINT, avail.version)
        return avail

    def provider_options(self, compiled: CompiledModel | None = None) -> dict[str, Any]:
        return {}

    def session_providers(self, compiled: CompiledModel | None = None) -> list[Any]:
        # The CPU provider stays last so ops the GPU provider lacks still run (ORT's own placement);
        # what we refuse is the *session* falling back, checked through get_providers().
        fallbacks = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.provider != "CUDAExecutionProvider" \
            else ["CPUExecutionProvider"]
        return [(self.provider, self.provider_options(compiled))] + fallbacks

    def _probe(self, path: Path, compiled: CompiledModel | None) -> list[str]:
        sess = OrtSession(Path(path), self.session_providers(compiled), None)
        try:
            return list(sess.providers)
        finally:
            sess.close()

    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig) -> OrtSession:
        sess = OrtSession(compiled.path, self.session_providers(compiled), runtime.threads)
        try:
            check_session_providers(self.provider, list(sess.providers))
        except UnsupportedRequest:
            sess.close()
            raise
        return sess


@register_backend("onnxruntime-cuda")
class OnnxRuntimeCudaBackend(_OrtGpuBackend):
    """ONNX Runtime's CUDA execution provider: FP32 and FP16 (an FP16 graph with FP32 inputs/outputs)."""

    provider: ClassVar[str] = "CUDAExecutionProvider"
    display_name: ClassVar[str] = "ONNX Runtime (CUDA EP)"

    def capabilities(self) -> Capabilities:
        # INT8 is not offered: the CUDA EP runs a QDQ graph as Q/DQ kernels around float operators, so its
        # timing would not describe INT8 execution. Use onnxruntime-tensorrt or tensorrt for INT8.
        return Capabilities(precisions=("fp32", "fp16"), targets=(self.provider,))

    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        compiled = super().compile(model, device, config, calibration, workdir)
        used = self._probe(compiled.path, compiled)
        check_session_providers(self.provider, used)
        meta = dict(compiled.metadata, session_providers=used)
        return CompiledModel(self.name, compiled.precision, compiled.path, meta)


@register_backend("onnxruntime-tensorrt")
class OnnxRuntimeTensorRTBackend(_OrtGpuBackend):
    """ONNX Runtime's TensorRT execution provider: FP32, FP16 (TensorRT's FP16 flag), INT8 from a QDQ graph."""

    provider: ClassVar[str] = "TensorrtExecutionProvider"
    display_name: ClassVar[str] = "ONNX Runtime (TensorRT EP)"
    Options: ClassVar[type[BackendOptions]] = OrtTensorRTOptions

    def capabilities(self) -> Capabilities:
        return Capabilities(precisions=("fp32", "fp16", "int8"),
                            calibration_methods=("minmax", "entropy", "percentile", "learned"),
                            targets=(self.provider,))

    def provider_options(self, compiled: CompiledModel | None = None) -> dict[str, Any]:
        if compiled is None:
            return {}
        cache = Path(compiled.path).parent / "trt-ep-cache"
        cache.mkdir(parents=True, exist_ok=True)
        # Engines are cached beside the artifact so the timed loop never includes an engine build.
        opts: dict[str, Any] = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                "trt_timing_cache_enable": True}
        if compiled.precision == "fp16":
            opts["trt_fp16_enable"] = True
        if compiled.precision == "int8":
            opts["trt_int8_enable"] = True  # the graph is QDQ: TensorRT takes its scales, no calibration table
        return opts

    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        import onnxruntime as ort

        from backends.tensorrt_int8 import build_qdq_graph, select_int8_route

        self.check_request(config)
        opts = self.options(config)
        meta: dict[str, Any] = {"execution_provider": self.provider}
        route = None
        if config.precision == "int8":
            if opts.int8_mode != "explicit":
                raise UnsupportedRequest("onnxruntime-tensorrt takes INT8 as a QDQ graph (int8_mode=explicit); "
                                         "implicit TensorRT calibration is offered by the tensorrt backend")
            route = select_int8_route(model, config.calibration, config.per_channel, "explicit")
            meta.update(calibration_method=route.method, int8_mode=route.mode, int8_source=route.source,
                        activation_signed=True)  # symmetric signed QDQ, the only INT8 TensorRT takes

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            # The graph lives in the entry so TensorRT's engine cache sits beside this artifact, not the checkpoint.
            if route is None:
                shutil.copyfile(model.path, out_dir / "model.onnx")
                return "model.onnx", {}
            path, facts = build_qdq_graph(model, route, calibration, config.per_channel, out_dir, opts.percentile)
            if path.parent != out_dir:
                shutil.copyfile(path, out_dir / "model.qdq.onnx")
            return "model.qdq.onnx", facts

        entry = self.cached_build(workdir, model, config, calibration if route is not None else None,
                                  ort.__version__, build)
        meta.update(entry.metadata())
        compiled = CompiledModel(self.name, config.precision, entry.path, meta)
        used = self._probe(compiled.path, compiled)
        check_session_providers(self.provider, used)
        meta["session_providers"] = used
        meta["trt_ep_options"] = {k: v for k, v in self.provider_options(compiled).items() if k != "trt_engine_cache_path"}
        return CompiledModel(self.name, compiled.precision, compiled.path, meta)
