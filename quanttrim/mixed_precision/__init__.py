"""Mixed precision (thesis chapters 3–4): layer sensitivity, Pareto bit allocation, bit maps, reporting.

``allocation`` and ``bitmap`` need only numpy; ``sensitivity`` and ``reproduce`` import torch inside.
CLI: ``python -m quanttrim.mixed_precision --help``.
"""
from __future__ import annotations

from quanttrim.mixed_precision.allocation import DEFAULT_BITS, VALID_WEIGHT_BITS, Allocation, InfeasibleBudget
from quanttrim.mixed_precision.allocation import LayerSpec, ParetoPoint, allocate_bits
from quanttrim.mixed_precision.bitmap import BitMap, bitmap_path, load_bitmap, save_bitmap

__all__ = [
    "DEFAULT_BITS", "VALID_WEIGHT_BITS", "Allocation", "InfeasibleBudget", "LayerSpec", "ParetoPoint",
    "allocate_bits", "BitMap", "bitmap_path", "load_bitmap", "save_bitmap",
]
