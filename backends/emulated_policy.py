"""Device quantization policies as the emulator reads them: the device's own, or a default for a precision.

A :class:`devices.profile.QuantPolicy` says how a device's compiler quantizes (weight bits and granularity,
activation numerics, calibration method). Here: the generic policy for a precision a device states none for,
the lookup of a device's policy, and the check that the emulator can build it.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from backends.base import UnsupportedRequest, validate_precision
from devices.choices import unknown_name

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import DeviceProfile, QuantPolicy

#: Policy calibration names -> the method the emulator runs ("max" is MinMax, "kl" is ORT's entropy/KL).
CALIBRATION_ALIASES = {"max": "minmax", "minmax": "minmax", "percentile": "percentile", "entropy": "entropy",
                       "kl": "entropy", "mse": "mse", "learned": "learned"}
EMULATOR_CALIBRATIONS = tuple(sorted(CALIBRATION_ALIASES))
INT_ACTIVATIONS = ("uint8", "int8", "int16")
FLOAT_ACTIVATIONS = ("bf16", "fp16", "fp32")

_WA = re.compile(r"^w(\d+)a(\d+|bf16|fp16)$")


def default_policy(precision: str) -> "QuantPolicy":
    """The generic policy for a precision when a device states none: float paths and WxAy forms.

    Integer activations default to the ONNX Runtime CPU convention (uint8 asymmetric, per-channel
    symmetric weights, MinMax over 256 images).
    """
    from devices.profile import QuantPolicy

    validate_precision(precision)
    src = "emulator default for this precision (the device profile states no policy)"
    if precision == "fp32":
        return QuantPolicy(name="fp32", weight_bits=None, weight_float="fp32", activation="fp32",
                           calibration_method="none", source=src)
    if precision in ("fp16", "bf16"):
        return QuantPolicy(name=precision, weight_bits=None, weight_float=precision, activation=precision,
                           calibration_method="none", source=src)
    if precision == "int8":
        return QuantPolicy(name="int8", source=src)
    m = _WA.match(precision)
    if m is None:  # int8-dynamic: activation scales at run time are not a static policy
        raise UnsupportedRequest(f"the emulator has no policy for {precision!r}; it emulates fp32, fp16, bf16, "
                                 "int8 and WxAy forms (w8a8, w4a8, w8a16, w8abf16, ...)")
    wbits, act = int(m.group(1)), m.group(2)
    if wbits >= 16:
        wkw: dict[str, Any] = {"weight_bits": None, "weight_float": "fp16"}
    else:
        wkw = {"weight_bits": wbits}
    if act in ("bf16", "fp16"):
        return QuantPolicy(name=precision, activation=act, calibration_method="none", source=src, **wkw)
    abits = int(act)
    if abits > 8:
        return QuantPolicy(name=precision, activation="int16", source=src, **wkw)
    if abits < 8:
        raise UnsupportedRequest(f"the emulator runs integer activations as uint8, int8 or int16, not {abits}-bit "
                                 f"({precision!r}); valid activation parts: a8, a16, abf16, afp16")
    return QuantPolicy(name=precision, source=src, **wkw)


def resolve_policy(device: "DeviceProfile", precision: str) -> tuple["QuantPolicy", str]:
    """The device's policy named ``precision`` (or a float default); returns (policy, where it came from)."""
    validate_precision(precision)
    for pol in device.quant_policies:
        if pol.name == precision:
            return pol, f"device profile {device.name}"
    if precision in ("fp32", "fp16", "bf16"):
        return default_policy(precision), "emulator default"
    valid = ", ".join(p.name for p in device.quant_policies) or "(none)"
    raise UnsupportedRequest(
        f"device {device.name!r} has no quantization policy {precision!r}; its policies: {valid} "
        "(plus fp32, fp16, bf16); add a [[quant_policies]] entry to its profile to emulate another"
    )


def float_weights(policy: "QuantPolicy") -> str | None:
    """'fp32'/'fp16'/'bf16' when the policy keeps weights in floating point, else None."""
    return policy.weight_float if policy.weight_float is not None else None


def check_policy(policy: "QuantPolicy", calibration_override: str | None = None) -> str | None:
    """Refuse a policy the emulator cannot run, naming the valid choices; returns the calibration method."""
    if policy.activation in INT_ACTIVATIONS:
        if float_weights(policy) is not None:
            raise UnsupportedRequest(f"policy {policy.name!r}: integer activations with {policy.weight_float} weights "
                                     "are not a path the emulator builds; use integer weights (weight_bits 2..16)")
        method = calibration_override or policy.calibration_method
        if method not in CALIBRATION_ALIASES:
            raise UnsupportedRequest(f"policy {policy.name!r}: "
                                     + unknown_name("calibration method", method, EMULATOR_CALIBRATIONS))
        return CALIBRATION_ALIASES[method]
    if policy.activation not in FLOAT_ACTIVATIONS:
        raise UnsupportedRequest(f"policy {policy.name!r}: unknown activation numerics {policy.activation!r}; "
                                 f"valid: {', '.join(INT_ACTIVATIONS + FLOAT_ACTIVATIONS)}")
    if policy.weight_bits is not None and float_weights(policy) is None and not 2 <= policy.weight_bits <= 16:
        raise UnsupportedRequest(f"policy {policy.name!r}: weight_bits must be 2..16, got {policy.weight_bits}")
    return None
