"""A stand-in for harness.model.card.OutputCard (same fields) until the model-card module lands."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputCard:
    name: str
    role: str
    batch_axis: int = 0
    class_axis: int = -1
    box_format: str | None = None
    detection_layout: str | None = None
    blank_index: int | None = None
