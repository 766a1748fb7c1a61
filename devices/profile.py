"""Device profiles: data files in this folder validated into frozen dataclasses."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from devices.choices import did_you_mean
from devices.numerics import ACTIVATION_NUMERICS, GRANULARITIES, INTEGER_ACTIVATIONS, validate_precision

FORM_FACTORS = ("soc", "m2_npu", "pcie_npu", "usb_npu", "desktop_gpu", "host_cpu")
ACTIVATION_SCALING = ("static", "dynamic", "static_or_qat", "static_or_dynamic", "none")
CALIBRATION_NEEDS = ("yes", "no", "conditional")
POWER_SOURCES = ("rapl", "hwmon", "ina3221", "nvml", "jtop", "tegrastats", "usb_meter", "none")
WEIGHT_GRANULARITY = GRANULARITIES
#: Signed weight grid: "restricted" = ±(2^(b−1) − 1), scale max|w| / (2^(b−1) − 1) (ORT's INT8 weights, TensorRT);
#: "full" = [−2^(b−1), 2^(b−1) − 1], scale 2·max|w| / (2^b − 1) (ORT's QInt4 weights, the QNN HTP's INT4).
WEIGHT_RANGES = ("restricted", "full")
POLICY_CALIBRATION = ("max", "minmax", "percentile", "entropy", "kl", "mse", "none")


class ProfileError(ValueError):
    """A device profile file is malformed; the message names the file, the key and the valid choices."""


def _check_choice(where: str, key: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ProfileError(f"{where}: {key} = {value!r} is not valid; {did_you_mean(value, valid)}valid: "
                           f"{', '.join(valid)}")


@dataclass(frozen=True)
class QuantPolicy:
    """The numerics a device's compiler applies for one precision path (paper Table 4)."""

    name: str                                  # e.g. "w8a8", "w8abf16", "fp16"
    weight_bits: int | None = 8                # None = floating point weights
    weight_float: str | None = None            # "fp16" / "bf16" when weight_bits is None
    weight_granularity: str = "per_channel"
    #: One of WEIGHT_RANGES. At 4 bits the two grids move every weight at ±max|w| differently (restricted:
    #: exactly on the grid; full: a rounding tie), which flips MAP vs Quant-Trim on ResNet-20 (issue 19).
    weight_range: str = "restricted"
    activation: str = "uint8"                  # one of ACTIVATION_NUMERICS
    activation_symmetric: bool = False
    calibration_method: str = "minmax"         # one of POLICY_CALIBRATION
    percentile: float | None = None            # for calibration_method = "percentile"
    calibration_samples: int = 256
    fallback_ops: tuple[str, ...] = ()         # ONNX op types the device runs as FP32 host islands
    #: Whether the network outputs leave the device quantized (Hailo/RKNN style) or in float (TensorRT
    #: returns FP32 network outputs: the last layer dequantizes, its output is never clipped to an INT8 range).
    output_quantized: bool = True
    source: str = ""                           # where the facts come from

    @property
    def per_channel(self) -> bool:
        """True when the device quantizes weights per output channel."""
        return self.weight_granularity == "per_channel"

    @property
    def activation_signed(self) -> bool:
        """True when activations are signed INT8 (symmetric, the TensorRT/NPU convention); uint8 is asymmetric."""
        return self.activation == "int8"

    @property
    def integer_activations(self) -> bool:
        return self.activation in INTEGER_ACTIVATIONS

    def validate(self, where: str) -> None:
        try:
            validate_precision(self.name)
        except ValueError as exc:  # the policy name is the precision the harness asks for
            raise ProfileError(f"{where}: policy name: {exc}") from None
        if self.weight_bits is not None and not 2 <= self.weight_bits <= 16:
            raise ProfileError(f"{where}: weight_bits must be 2..16 or absent, got {self.weight_bits}")
        if self.weight_bits is None and self.weight_float not in ("fp16", "bf16", "fp32"):
            raise ProfileError(f"{where}: floating-point weights need weight_float in fp16, bf16, fp32")
        _check_choice(where, "weight_granularity", self.weight_granularity, WEIGHT_GRANULARITY)
        _check_choice(where, "weight_range", self.weight_range, WEIGHT_RANGES)
        _check_choice(where, "activation", self.activation, ACTIVATION_NUMERICS)
        _check_choice(where, "calibration_method", self.calibration_method, POLICY_CALIBRATION)
        if self.activation in INTEGER_ACTIVATIONS and self.calibration_method == "none":
            valid = ", ".join(m for m in POLICY_CALIBRATION if m != "none")
            raise ProfileError(f"{where}: integer activations ({self.activation}) need a calibration_method; "
                               f"valid: {valid}")
        if self.percentile is not None and not 50.0 < self.percentile <= 100.0:
            raise ProfileError(f"{where}: percentile must be in (50, 100], got {self.percentile}")
        if self.calibration_samples < 1:
            raise ProfileError(f"{where}: calibration_samples must be >= 1, got {self.calibration_samples}")


@dataclass(frozen=True)
class DeviceProfile:
    """Everything the harness needs to know about one device."""

    name: str
    display_name: str
    form_factor: str
    #: Backends in preference order; the first is the platform's default runtime.
    backends: tuple[str, ...]
    #: Precisions the harness runs on this device (registry precision names).
    precisions: tuple[str, ...]
    #: Weight/activation precision paths as in paper Table 4 (e.g. "w8a8", "w8a16", "w8abf16").
    wa_paths: tuple[str, ...] = ()
    activation_scaling: str = "static"
    int_ptq_needs_calibration: str = "yes"
    power_sources: tuple[str, ...] = ("none",)
    peak_tops: float | None = None
    peak_tops_precision: str | None = None
    typical_power_w: float | None = None
    typical_power_w_range: tuple[float, float] | None = None
    price_eur: float | None = None
    link: str | None = None
    cpu_arch: str | None = None                # "x86_64", "aarch64"
    tvm_target: str | None = None              # llvm target for the CPU or "cuda"
    rknn_platform: str | None = None
    #: Qualcomm SoC the QNN HTP backend compiles for: a chip name ("SM8550") or QNN's numeric soc_model id.
    qnn_soc_model: str | None = None
    #: Arm Ethos-U configuration Vela compiles for, e.g. "ethos-u65-256" (vela --accelerator-config).
    ethosu_accelerator: str | None = None
    #: Vela system and memory-mode sections (vela.ini) naming the SoC's clocks and memories; None = Vela's default.
    ethosu_system_config: str | None = None
    ethosu_memory_mode: str | None = None
    #: Sophgo processor tpu-mlir deploys for, e.g. "bm1684x" (model_deploy --processor).
    tpu_processor: str | None = None
    quant_policies: tuple[QuantPolicy, ...] = ()
    notes: str = ""
    sources: tuple[str, ...] = ()
    #: Facts probed at load time (only for the host profile `cpu`).
    probed: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        where = f"device profile {self.name!r}"
        _check_choice(where, "form_factor", self.form_factor, FORM_FACTORS)
        _check_choice(where, "activation_scaling", self.activation_scaling, ACTIVATION_SCALING)
        _check_choice(where, "int_ptq_needs_calibration", self.int_ptq_needs_calibration, CALIBRATION_NEEDS)
        for src in self.power_sources:
            _check_choice(where, "power_sources", src, POWER_SOURCES)
        if not self.backends:
            raise ProfileError(f"{where}: backends must name at least one backend")
        for p in self.precisions:
            try:
                validate_precision(p)
            except ValueError as exc:
                raise ProfileError(f"{where}: {exc}") from None
        for pol in self.quant_policies:
            pol.validate(f"{where}, policy {pol.name!r}")

    @property
    def default_backend(self) -> str:
        return self.backends[0]

    def policy(self, name: str) -> QuantPolicy:
        for pol in self.quant_policies:
            if pol.name == name:
                return pol
        names = [p.name for p in self.quant_policies]
        raise KeyError(f"device {self.name!r} has no quantization policy {name!r}; {did_you_mean(name, names)}"
                       f"valid: {', '.join(names) or '(none)'}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))
