"""Fidelity scoring against the FP32 reference: ``score_outputs`` (every output, by role) and ``metrics``."""
from __future__ import annotations

from harness.scoring.outputs import ROLES, NonFiniteOutputs, Scores, primary_index, score_outputs

__all__ = ["NonFiniteOutputs", "ROLES", "Scores", "primary_index", "score_outputs"]
