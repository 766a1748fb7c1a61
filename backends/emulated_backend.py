"""Emulation of a device's quantization policy on the host CPU, run with ONNX Runtime.

Most edge NPUs are reachable only through vendor SDKs that are not public. This adapter builds, from
the FP32 ONNX checkpoint, the graph whose numerics match the device's :class:`QuantPolicy` (paper
Table 4) and runs it with ONNX Runtime on the CPU:

* integer activations (uint8/int8/int16): a QDQ graph from ONNX Runtime's own quantizer with the
  policy's weight granularity, activation signedness/symmetry and calibration method (minmax/max,
  percentile, entropy/KL, MSE, or the trainer's learned ranges); weights of 2..7 bits are put on the
  b-bit grid inside the INT8 container (scale = max|w| / (2^(b-1) − 1)), which is numerically the
  b-bit grid while keeping ONNX Runtime's INT8 kernels;
* float activations (bf16/fp16): weights fake-quantized (or rounded to bf16/fp16) in place and a
  ``Cast(to=BFLOAT16|FLOAT16) → Cast(to=FLOAT)`` pair after every activation-producing node, which
  rounds to nearest even exactly as numpy/ml_dtypes bfloat16 does;
* operators the device cannot run (``policy.fallback_ops``) or the emulator cannot quantize stay FP32
  and are recorded as host islands in the compiled model's metadata.

Records from this backend are fidelity evidence only: timings describe the host CPU, never the device.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from backends.base import BASE_PRECISIONS, Availability, Backend, Capabilities, CompileConfig, CompiledModel
from backends.base import ModelArtifact, RuntimeConfig, UnsupportedRequest, calibration_head, calibration_inputs
from backends.emulated_graphs import (  # noqa: F401  (re-exported: the analysis and tests use them here)
    ACT_SUFFIX,
    NODE_PREFIX,
    PRE_SUFFIX,
    build_emulated_graph,
    float_tensor_names,
    name_nodes,
)
from backends.emulated_policy import (  # noqa: F401  (re-exported)
    CALIBRATION_ALIASES,
    EMULATOR_CALIBRATIONS,
    INT_ACTIVATIONS,
    check_policy,
    default_policy,
    resolve_policy,
)
from backends.options import BackendOptions
from backends.quantization import fake_quantize_weight, quantize_weight, round_to_bf16, round_to_float  # noqa: F401
from backends.registry import register_backend

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile, QuantPolicy

TIMING_NOTE = "emulation on the host CPU: no latency or power claim for the target device"


@dataclass(frozen=True)
class EmulatedOptions(BackendOptions):
    """Options of the emulator."""

    #: Calibrate on the policy's own sample count (the first images of the draw), as the device would.
    policy_calibration_samples: bool = True


def _policy_key(policy: "QuantPolicy") -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(policy), sort_keys=True, default=str))


@register_backend("emulated")
class EmulatedBackend(Backend):
    """A device's quantization policy emulated on the host CPU with ONNX Runtime (fidelity only)."""

    install_hint: ClassVar[str] = "pip install onnxruntime"
    display_name: ClassVar[str] = "policy emulation (host CPU)"
    Options: ClassVar[type[BackendOptions]] = EmulatedOptions

    @classmethod
    def availability(cls) -> Availability:
        from backends.onnxruntime_backend import ort_available

        return ort_available(None)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=tuple(p for p in BASE_PRECISIONS if p != "int8-dynamic") + (
                "w8a8", "w8a16", "w4a8", "w4a16", "w8abf16", "w4abf16", "w8afp16"),
            calibration_methods=tuple(sorted(set(CALIBRATION_ALIASES))),
            granularities=("per_tensor", "per_channel"),
            targets=("emulation on CPUExecutionProvider",),
            simulated=True,
        )

    @classmethod
    def refusal_for(cls, caps: Capabilities, config: CompileConfig) -> str | None:
        """Any static precision the device has a policy for (checked at compile, against the device's policies);
        dynamic INT8 is not a static policy."""
        if config.precision == "int8-dynamic":
            return ("the emulator runs static quantization policies; int8-dynamic computes activation scales at "
                    "run time (use the onnxruntime backend)")
        # Any other precision is a policy name: the device's policies decide at compile, not a fixed list.
        return super().refusal_for(dataclasses.replace(caps, precisions=(config.precision,)), config)

    def compile(self, model: ModelArtifact, device: "DeviceProfile", config: CompileConfig,
                calibration: np.ndarray | None, workdir: Path) -> CompiledModel:
        import onnxruntime as ort

        self.check_request(config)
        policy, policy_from = resolve_policy(device, config.precision)
        if calibration is not None and self.options(config).policy_calibration_samples:
            # The device calibrates on policy.calibration_samples images: the first ones of the draw.
            calibration = calibration_head(calibration, policy.calibration_samples)
        meta: dict[str, Any] = {
            "emulated": True, "timing_note": TIMING_NOTE, "target_device": device.name,
            "policy_name": policy.name, "policy_from": policy_from, "policy_source": policy.source,
            "execution_provider": "CPUExecutionProvider",
        }
        if policy.activation in INT_ACTIVATIONS:
            meta["activation_signed"] = policy.activation != "uint8"
        if policy.activation in INT_ACTIVATIONS and config.per_channel != policy.per_channel:
            # The device's policy is what is emulated; say so rather than change it quietly either way.
            meta["request_not_applied"] = (f"per_channel={config.per_channel}: the {device.name} policy "
                                           f"{policy.name!r} quantizes weights {policy.weight_granularity}")
        if calibration is not None:
            meta["calibration_samples_used"] = int(len(next(iter(calibration_inputs(calibration, "").values()))))
            meta["calibration_samples_policy"] = int(policy.calibration_samples)
        if config.precision == "fp32" and policy_from == "emulator default":
            meta.update({"fp32_islands": [], "fp32_island_ops": []})
            return CompiledModel(self.name, "fp32", Path(model.path), meta)
        images = calibration if policy.activation in INT_ACTIVATIONS else None

        def build(out_dir: Path) -> tuple[str, dict[str, Any]]:
            dst, facts = build_emulated_graph(model, policy, images, out_dir, config.calibration)
            return dst.name, facts

        # The build emulates the policy's granularity whatever the request says (request_not_applied above), so the
        # key carries the policy's: a per-tensor and a per-channel request share the one artifact they both get.
        keyed = dataclasses.replace(config, per_channel=policy.per_channel)
        entry = self.cached_build(workdir, model, keyed, images, ort.__version__, build, policy=_policy_key(policy))
        meta.update(entry.metadata())
        return CompiledModel(self.name, config.precision, entry.path, meta)

    def load(self, compiled: CompiledModel, device: "DeviceProfile", runtime: RuntimeConfig):
        from backends.onnxruntime_backend import OrtSession

        return OrtSession(compiled.path, ["CPUExecutionProvider"], runtime.threads)


def emulated_tensor_source(name: str) -> str:
    """Map a tensor name of an emulated/QDQ graph back to the FP32 graph's name."""
    for suffix in (PRE_SUFFIX, ACT_SUFFIX, "_QuantizeLinear_Input"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


__all__ = [
    "EmulatedBackend", "TIMING_NOTE", "build_emulated_graph", "check_policy", "default_policy", "resolve_policy",
    "round_to_bf16", "round_to_float", "quantize_weight", "fake_quantize_weight", "emulated_tensor_source",
]
