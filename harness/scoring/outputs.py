"""Score every output of a model against the same output of the FP32 reference, each by its role.

``score_outputs(outputs, reference, cards, labels)`` is what the worker's validation stage calls. For every
output, whatever its shape: SNR (dB), MSE, cosine similarity, max abs error and a worst-channels SNR table;
then the role's metrics (``roles.py``, ``detection.py``). The primary output (the first logits or probabilities
output, else the first detection, mask, sequence, embedding, regression, raw output, in that order) fills the
record's top-level fields under today's names, so existing tables keep working; every output is in ``per_output``.

Cards are ``harness.model.card.OutputCard`` (name, role, batch_axis, class_axis, box_format, detection_layout,
blank_index).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from harness.model.card import ROLES
from harness.scoring import detection, roles
from harness.scoring.tensors import (LOW_CHANNEL_SNR_DB, NonFiniteOutputs, accumulate, batch_first, check_finite,
                                     tensor_metrics, worst_channels)

#: Which output's metrics become the record's top-level fields: the first of the earliest role here.
PRIMARY_ORDER = ("logits", "probabilities", "detection", "mask", "sequence", "embedding", "regression", "raw")
#: Top-level fields taken from the primary output's tensor metrics (record name <- per-output name).
_TENSOR_FIELDS = {"snr_db": "snr_db", "exact_match": "exact_match", "output_mse": "mse",
                  "output_cosine": "cosine", "output_max_abs_error": "max_abs_error"}

__all__ = ["NonFiniteOutputs", "PRIMARY_ORDER", "ROLES", "Scores", "primary_index", "score_outputs"]


@dataclass(frozen=True)
class Scores:
    """What scoring returns to the worker.

    fields: top-level record fields for the primary output (top1, top5, top1_agreement, logit_mse, snr_db, ece,
        brier, miou, plus exact_match, output_mse, probability_mse, map50, ..., worst_channel_snr_db,
        primary_output, scoring_notes); strict JSON: floats, bools, strings or None, never NaN or ±inf.
    per_output: one dict per output in the graph's order (name, role, shape, snr_db, exact_match, mse, cosine,
        max_abs_error, channels, channels_snr_le_0db, worst_channels [{channel, snr_db, exact_match}], role
        metrics, notes).
    per_sample: bool vectors over the evaluation images for bootstrap CIs (top1_correct, top1_agree,
        sequence_agree), from the primary output.
    """

    fields: dict[str, Any]
    per_output: list[dict[str, Any]]
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)


def primary_index(cards: Sequence[Any]) -> int:
    """Index of the output whose metrics fill the record's top-level fields (see PRIMARY_ORDER)."""
    for role in PRIMARY_ORDER:
        for i, card in enumerate(cards):
            if card.role == role:
                return i
    return 0


def score_outputs(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray], cards: Sequence[Any],
                  labels: np.ndarray | None) -> Scores:
    """Score each backend output against the same FP32 reference output, by the role its card gives.

    Args:
        outputs: the backend's outputs in the graph's order, each with N samples along its card's batch axis.
        reference: the FP32 reference's outputs, same order and shapes.
        cards: one OutputCard per output (role, batch_axis, class_axis, box_format, detection_layout,
            blank_index).
        labels: class ids (N,), masks (N, H, W), per-image box arrays (object array), or None (no labels:
            label metrics are empty with the reason in ``scoring_notes``).
    Raises:
        NonFiniteOutputs: NaN/Inf in any backend or reference output ("k of N outputs non-finite ...").
        ValueError: counts or shapes that do not match, or a card that does not fit its output.
    """
    names = [card.name for card in cards]
    if not (len(outputs) == len(reference) == len(cards)):
        raise ValueError(f"{len(outputs)} backend outputs, {len(reference)} reference outputs and {len(cards)} "
                         "output cards: they must match one to one (graph output order)")
    check_finite(reference, names, "FP32 reference")
    check_finite(outputs, names, "backend")
    per_output, results = [], []
    n_images = None
    for out, ref, card in zip(outputs, reference, cards):
        if card.role not in ROLES:
            raise ValueError(f"output {card.name!r}: unknown role {card.role!r}; valid: {', '.join(ROLES)}")
        if np.shape(out) != np.shape(ref):
            raise ValueError(f"output {card.name!r}: shape {np.shape(out)} differs from the reference's "
                             f"{np.shape(ref)}")
        o, class_axis = batch_first(out, card.batch_axis, card.class_axis, card.name)
        r, _ = batch_first(ref, card.batch_axis, card.class_axis, card.name)
        if n_images is not None and o.shape[0] != n_images:
            raise ValueError(f"output {card.name!r} has {o.shape[0]} samples along batch axis {card.batch_axis}, "
                             f"the outputs before it {n_images}: check batch_axis in the model card")
        if labels is not None and len(labels) != o.shape[0]:
            raise ValueError(f"{len(labels)} labels for {o.shape[0]} scored samples of output {card.name!r}")
        n_images = o.shape[0]
        row, result = _score_one(o, r, class_axis, card, labels)
        row["shape"] = list(np.shape(out))
        per_output.append(row)
        results.append(result)
    p = primary_index(cards)
    fields = _top_level(per_output, results, p)
    return Scores(fields=fields, per_output=per_output, per_sample=dict(results[p].per_sample))


def _score_one(o: np.ndarray, r: np.ndarray, class_axis: int | None, card: Any,
               labels: np.ndarray | None) -> tuple[dict[str, Any], roles.RoleResult]:
    stats = accumulate(o, r, class_axis)
    row: dict[str, Any] = {"name": card.name, "role": card.role, "batch_axis": card.batch_axis,
                           "class_axis": card.class_axis, "samples": int(o.shape[0])}
    row.update(tensor_metrics(stats))
    if card.role == "detection" and class_axis is not None:
        decisive = detection.decisive_channels(r, class_axis, getattr(card, "detection_layout", None))
    else:
        decisive = roles.decisive_channels(r, class_axis, card.role)
    row.update(worst_channels(stats, decisive))
    result = _role_metrics(o, r, class_axis, card, labels)
    row.update(result.fields)
    notes = list(result.notes)
    if row.get("snr_note"):
        notes.append(f"{card.name!r}: {row.pop('snr_note')}")
    if row["dead_channel_count"]:
        notes.append(f"{card.name!r}: {row['dead_channel_count']} of {row['channels']} channels dead (constant where "
                     f"the reference varies and decides: zeroed or saturated): {row['dead_channels']}")
    if row["channels_snr_le_0db"]:
        notes.append(f"{card.name!r}: {row['channels_snr_le_0db']} of {row['channels']} channels at ≤ "
                     f"{LOW_CHANNEL_SNR_DB:g} dB SNR (error at least as large as the signal; see worst_channels "
                     "and their signal_share)")
    row["notes"] = notes
    return row, result


def _role_metrics(o: np.ndarray, r: np.ndarray, class_axis: int | None, card: Any,
                  labels: np.ndarray | None) -> roles.RoleResult:
    role = card.role
    if role in ("logits", "probabilities"):
        return roles.classifier(o, r, class_axis, labels, card.name, probabilities=role == "probabilities")
    if role == "detection":
        return detection.detection(o, r, class_axis, labels, card.name, getattr(card, "detection_layout", None),
                                   getattr(card, "box_format", None))
    if role == "mask":
        return roles.mask(o, r, class_axis, labels, card.name)
    if role == "sequence":
        return roles.sequence(o, r, class_axis, card.name, getattr(card, "blank_index", None))
    if role == "embedding":
        return roles.embedding(o, r)
    result = roles.RoleResult()
    if role == "regression":
        result.notes.append(f"{card.name!r}: regression: output_mse (units²) and max_abs_error (units) are its "
                            "metrics")
    else:
        result.notes.append(f"{card.name!r}: role raw: tensor metrics only (give it a role in the model card "
                            "for role metrics)")
    return result


def _top_level(per_output: list[dict[str, Any]], results: list[roles.RoleResult], p: int) -> dict[str, Any]:
    """Record fields: the primary output's metrics under today's names, plus worst channels over all outputs."""
    primary = per_output[p]
    fields: dict[str, Any] = {"primary_output": primary["name"], "primary_role": primary["role"]}
    for record_name, row_name in _TENSOR_FIELDS.items():
        fields[record_name] = primary[row_name]
    fields.update(results[p].fields)
    worst = [dict(output=row["name"], **ch) for row in per_output for ch in row["worst_channels"]]
    worst.sort(key=lambda ch: -np.inf if ch["snr_db"] is None else ch["snr_db"])
    fields["worst_channels"] = worst[:8]
    finite = [ch["snr_db"] for ch in worst if ch["snr_db"] is not None]
    # A channel whose reference is all zero has no finite SNR; it is listed (first) and counted as ≤ 0 dB.
    fields["worst_channel_snr_db"] = min(finite) if finite else None
    counts = [row["dead_channel_count"] for row in per_output if row["dead_channel_count"] is not None]
    fields["dead_output_channels"] = sum(counts) if counts else None
    notes = [n for row in per_output for n in row["notes"]]
    fields["scoring_notes"] = list(dict.fromkeys(notes))  # one "no labels" note, not one per output
    return fields
