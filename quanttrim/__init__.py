"""Quant-Trim trainer: progressive fake quantization + reverse pruning, MAP baseline, ONNX export.

Kept deliberately light: nothing here imports torch, so ``python -m quanttrim --help`` is fast and
the harness can import this package on machines without the ``train`` extra. Import the parts you
need (``quanttrim.quantizers``, ``quanttrim.train``, ...) directly.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
