"""Per-layer weight bit widths on a model wrapped by :func:`quanttrim.wrap.quantize_model`.

The trainer's ``QuantConfig`` has one ``weight_bits`` and one ``act_bits`` for the whole model; mixed
precision needs a bit width per Conv/Linear layer. Rather than fork the wrapper, each listed layer's
weight quantizer gets a thin view of the shared ``QuantContext``: every run-time field (λ, observer
step, RNG, momentum) is read live from the shared context — so Quant-Trim's λ schedule, observers and
reverse pruning apply unchanged — and only ``cfg.weight_bits`` differs. The activation bit width is the
config's ``act_bits`` (one per model, as in the thesis's A8/A6/A4 grid).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping

from quanttrim.mixed_precision.allocation import validate_bits

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


class LayerBitsContext:
    """A QuantContext view with this layer's weight bits; everything else is the shared context's, live."""

    def __init__(self, shared: Any, weight_bits: int) -> None:
        object.__setattr__(self, "_shared", shared)
        object.__setattr__(self, "cfg", dataclasses.replace(shared.cfg, weight_bits=int(weight_bits)))

    def __getattr__(self, name: str) -> Any:  # only called for names not set on the view itself
        return getattr(object.__getattribute__(self, "_shared"), name)

    def __setattr__(self, name: str, value: Any) -> None:  # writes go to the shared context
        setattr(object.__getattribute__(self, "_shared"), name, value)


def apply_weight_bits(model: "nn.Module", weight_bits: Mapping[str, int]) -> dict[str, int]:
    """Give each named Conv/Linear layer of a wrapped model its own weight bit width (in place).

    Layers not in the map keep the config's ``weight_bits``. Returns the effective map for every layer.
    Raises ValueError for names that are not wrapped weight layers (listing the valid ones) and for bit
    widths outside 2–8.
    """
    from quanttrim.wrap import context, weight_layers

    shared = context(model)
    layers = dict(weight_layers(model))
    unknown = [n for n in weight_bits if n not in layers]
    if unknown:
        raise ValueError(f"not quantized weight layers of the model: {', '.join(unknown)}; "
                         f"valid: {', '.join(layers)}")
    effective: dict[str, int] = {}
    for name, layer in layers.items():
        if name in weight_bits:
            (b,) = validate_bits([weight_bits[name]], what=f"weight bit width for layer {name!r}")
            layer.qt_w.__dict__["ctx"] = shared if b == shared.cfg.weight_bits else LayerBitsContext(shared, b)
        effective[name] = layer.qt_w.ctx.cfg.weight_bits
    return effective


def weight_bits_of(model: "nn.Module") -> dict[str, int]:
    """The weight bit width each wrapped layer currently quantizes to."""
    from quanttrim.wrap import weight_layers

    return {name: layer.qt_w.ctx.cfg.weight_bits for name, layer in weight_layers(model)}
