"""The numeric vocabulary every layer shares: precisions, calibration methods, granularities, signedness.

This is the bottom module of the project: device profiles, backends and the harness import it; it imports
nothing of theirs. Precision names follow paper Table 4 (``w8a8``, ``w8a16``, ``w8abf16``) plus the usual
``fp32``/``fp16``/``bf16``/``int8``/``int8-dynamic``.
"""
from __future__ import annotations

import re

from devices.choices import did_you_mean

#: Precisions every part of the project understands. WxAy forms (w8a16, w4a8, w8abf16) are accepted by
#: :func:`validate_precision` as well.
BASE_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-dynamic")
#: WxAy forms an error names as examples (and may suggest).
_WA_EXAMPLES = ("w8a8", "w8a16", "w4a8", "w8abf16")
_WA_PATTERN = re.compile(r"^w(2|3|4|5|6|7|8|16)a(2|3|4|5|6|7|8|16|bf16|fp16)$")

#: Calibration methods a compile request may name (a backend lists the subset it has).
CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "mse", "kl", "learned")
#: Weight quantization granularities.
GRANULARITIES = ("per_tensor", "per_channel")
#: Activation numerics a device's compiler may use (paper Table 4).
ACTIVATION_NUMERICS = ("uint8", "int8", "int16", "bf16", "fp16", "fp32")
INTEGER_ACTIVATIONS = ("uint8", "int8", "int16")


def validate_precision(precision: str) -> str:
    """Return ``precision`` if known, else raise ValueError naming the valid choices."""
    if precision in BASE_PRECISIONS or _WA_PATTERN.match(precision):
        return precision
    # the WxAy examples are suggested too: "in8" finds "int8", "w8a18" finds "w8a8"
    hint = did_you_mean(precision, BASE_PRECISIONS + _WA_EXAMPLES)
    raise ValueError(f"unknown precision {precision!r}; {hint}valid: {', '.join(BASE_PRECISIONS)} "
                     f"or a WxAy form such as {', '.join(_WA_EXAMPLES)}")


def is_integer_precision(precision: str) -> bool:
    """True when the precision needs integer quantization (and so usually calibration)."""
    return precision.startswith("int") or bool(_WA_PATTERN.match(precision))


def takes_calibration(precision: str) -> bool:
    """True when a compile at this precision needs a calibration set (static integer quantization)."""
    return is_integer_precision(precision) and precision != "int8-dynamic"


def granularity_name(per_channel: bool) -> str:
    """``per_channel`` / ``per_tensor`` for a boolean flag."""
    return "per_channel" if per_channel else "per_tensor"
