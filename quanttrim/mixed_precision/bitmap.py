"""The per-layer bit map saved next to a checkpoint as ``<stem>.bits.json`` and read back.

Format ``quanttrim-bits/1``::

    {"format": "quanttrim-bits/1",
     "weight_bits": {"conv1": 8, "layer1.0.conv1": 4, ...},   # per Conv/Linear module name
     "activation_bits": 8,
     "params": {"conv1": 144, ...},                          # optional, for size accounting
     "meta": {...}}                                           # free-form provenance
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from quanttrim.mixed_precision.allocation import VALID_WEIGHT_BITS, validate_bits

FORMAT = "quanttrim-bits/1"
#: Activation bit widths the fake quantizers accept (the thesis drops 2-bit activations: severe loss).
VALID_ACTIVATION_BITS: tuple[int, ...] = VALID_WEIGHT_BITS


@dataclass(frozen=True)
class BitMap:
    """Per-layer weight bits plus one activation bit width."""

    weight_bits: Mapping[str, int]
    activation_bits: int = 8
    params: Mapping[str, int] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, b in self.weight_bits.items():
            validate_bits([b], what=f"weight bit width for layer {name!r}")
        validate_bits([self.activation_bits], what="activation bit width")
        unknown = sorted(set(self.params) - set(self.weight_bits))
        if unknown:
            raise ValueError(f"params given for layers without bits: {', '.join(unknown)}")
        object.__setattr__(self, "weight_bits", {k: int(v) for k, v in self.weight_bits.items()})
        object.__setattr__(self, "params", {k: int(v) for k, v in self.params.items()})

    def size_bytes(self) -> float:
        """Σ P_ℓ·b_ℓ/8 over the layers whose parameter count is known (the thesis's mixed-precision size)."""
        missing = sorted(set(self.weight_bits) - set(self.params))
        if missing:
            raise ValueError(f"no parameter count for: {', '.join(missing)}; build the map with params")
        return sum(self.params[n] * b / 8.0 for n, b in self.weight_bits.items())

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "weight_bits": dict(self.weight_bits), "activation_bits": self.activation_bits,
                "params": dict(self.params), "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BitMap":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a per-layer bit map: format {data.get('format')!r}, expected {FORMAT!r}")
        return cls(dict(data["weight_bits"]), int(data.get("activation_bits", 8)),
                   dict(data.get("params", {})), dict(data.get("meta", {})))


def bitmap_path(checkpoint: Path | str) -> Path:
    """``model.onnx`` / ``model.pt`` -> ``model.bits.json`` in the same folder."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".bits.json")


def save_bitmap(bitmap: BitMap, checkpoint: Path | str) -> Path:
    """Write the map next to the checkpoint; returns the JSON path."""
    out = bitmap_path(checkpoint)
    out.write_text(json.dumps(bitmap.to_dict(), indent=2, sort_keys=True) + "\n")
    return out


def load_bitmap(checkpoint_or_json: Path | str) -> BitMap:
    """Read a map given the checkpoint path or the ``.bits.json`` path itself."""
    p = Path(checkpoint_or_json)
    if not p.name.endswith(".bits.json"):
        p = bitmap_path(p)
    if not p.exists():
        raise FileNotFoundError(f"no per-layer bit map at {p} (write one with save_bitmap)")
    return BitMap.from_dict(json.loads(p.read_text()))
