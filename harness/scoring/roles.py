"""Role metrics: what an output means decides how it is scored against the FP32 reference (and labels).

Every function takes batch-first arrays (``tensors.batch_first``) with the class/channel axis already known,
and returns ``RoleResult``: metric fields (strict JSON: floats or None, never NaN), per-sample boolean vectors
over the evaluation images (for bootstrap confidence intervals) and notes saying why a metric is empty.
Detection lives in ``detection.py`` (it needs a COCO evaluator).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.scoring import metrics

#: Rows of a probabilities output may miss 1 by this much (float16/INT8 rounding) before it is said.
_PROB_SUM_TOLERANCE = 1e-3


@dataclass
class RoleResult:
    """Metric fields, per-sample vectors (bool, length N) and notes of one output's role metrics."""

    fields: dict[str, Any] = field(default_factory=dict)
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _class_last(x: np.ndarray, class_axis: int | None) -> np.ndarray:
    return x if class_axis is None or class_axis == x.ndim - 1 else np.moveaxis(x, class_axis, -1)


def _as_rows(x: np.ndarray, class_axis: int | None, name: str, role: str) -> np.ndarray:
    """(N, K) rows of a classifier output; singleton extra dims (N, 1, K) are squeezed, others refused."""
    x = _class_last(x, class_axis)
    if x.ndim == 2:
        return x
    if x.ndim > 2 and all(d == 1 for d in x.shape[1:-1]):
        return x.reshape(x.shape[0], x.shape[-1])
    raise ValueError(f"output {name!r} has shape {x.shape} (batch first): role {role!r} needs one score vector per "
                     "image (N, K); give it role 'mask' (per pixel) or 'sequence' (per position) in the model card")


def _usable_labels(labels: np.ndarray | None, n: int, k: int, result: RoleResult) -> np.ndarray | None:
    """Integer class labels (N,) within [0, K), else None with the reason in the notes."""
    if labels is None:
        result.notes.append("no labels: top1/top5/ECE/Brier are empty (fidelity against the FP32 reference only)")
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iub":
        result.notes.append(f"labels of shape {labels.shape} are not one class id per image: label metrics empty")
        return None
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        result.notes.append(f"labels span {labels.min()}..{labels.max()} but the output has {k} classes: label "
                            "metrics empty (do the data's class folders match the model's classes?)")
        return None
    return labels.astype(np.int64)


def classifier(out: np.ndarray, ref: np.ndarray, class_axis: int | None, labels: np.ndarray | None,
               name: str, probabilities: bool) -> RoleResult:
    """logits: logit_mse, ECE/Brier of the softmax; probabilities: probability_mse, ECE/Brier as given.

    Both: top1_agreement with the reference, top1/top5 when labels fit. A probabilities output never gets a
    second softmax (that would flatten the confidences: ECE 0.71 instead of 0.036 on a Softmax-ended model).
    """
    result = RoleResult()
    o = _as_rows(out, class_axis, name, "probabilities" if probabilities else "logits")
    r = _as_rows(ref, class_axis, name, "probabilities" if probabilities else "logits")
    agree = np.argmax(o, axis=1) == np.argmax(r, axis=1)
    result.fields["top1_agreement"] = float(agree.mean())
    result.per_sample["top1_agree"] = agree
    if probabilities:
        result.fields["probability_mse"] = metrics.mean_squared_l2(o, r)
        dev = float(np.abs(np.asarray(o, dtype=np.float64).sum(axis=1) - 1.0).max())
        if dev > _PROB_SUM_TOLERANCE:
            result.notes.append(f"rows of {name!r} do not sum to 1 (off by up to {dev:.3g}): ECE/Brier taken on the "
                                "values as given")
    else:
        result.fields["logit_mse"] = metrics.logit_mse(o, r)
    y = _usable_labels(labels, o.shape[0], o.shape[1], result)
    if y is not None:
        correct = np.argmax(o, axis=1) == y
        result.per_sample["top1_correct"] = correct
        result.fields["top1"] = float(correct.mean())
        result.fields["top5"] = metrics.topk_accuracy(o, y, 5)
        result.fields["ece"] = metrics.ece_probs(o, y) if probabilities else metrics.ece(o, y)
        result.fields["brier"] = metrics.brier_probs(o, y) if probabilities else metrics.brier(o, y)
    return result


def _mask_classes(x: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """Per-pixel class ids (N, ...): the argmax over the channel axis."""
    if channel_axis is None:
        raise ValueError("a mask output needs a channel axis (class_axis in the model card)")
    return np.argmax(x, axis=channel_axis).astype(np.int64)


def mask(out: np.ndarray, ref: np.ndarray, class_axis: int | None, labels: np.ndarray | None,
         name: str) -> RoleResult:
    """Segmentation: mIoU of the per-pixel classes against the FP32 masks (and the labels when they are masks).

    A single-channel map (e.g. a text detector's probability map) is a binary mask: > 0.5 for values in [0, 1],
    else > 0 (logits); both outputs are thresholded the same way, decided from the reference.
    """
    result = RoleResult()
    if class_axis is not None and ref.shape[class_axis] == 1:
        in_unit = float(np.min(ref)) >= 0.0 and float(np.max(ref)) <= 1.0
        thr = 0.5 if in_unit else 0.0
        pred = (np.take(out, 0, axis=class_axis) > thr).astype(np.int64)
        true = (np.take(ref, 0, axis=class_axis) > thr).astype(np.int64)
        k = 2
        result.notes.append(f"{name!r}: one channel, binary mask at > {thr:g}")
    else:
        pred, true = _mask_classes(out, class_axis), _mask_classes(ref, class_axis)
        k = ref.shape[class_axis]
    same = (pred == true).reshape(pred.shape[0], -1)
    result.fields["pixel_agreement"] = float(same.mean())
    result.fields["miou_vs_reference"] = _finite(metrics.miou(pred, true, k))
    if labels is None:
        result.notes.append("no labels: mIoU against labels empty (mIoU against the FP32 masks is given)")
    elif np.shape(labels) == pred.shape and np.asarray(labels).dtype.kind in "iub":
        lab = np.asarray(labels, dtype=np.int64)
        if lab.min() < 0 or lab.max() >= k:
            result.notes.append(f"mask labels span {lab.min()}..{lab.max()} but the output has {k} classes: "
                                "mIoU against labels empty")
        else:
            result.fields["miou"] = _finite(metrics.miou(pred, lab, k))
    else:
        result.notes.append(f"labels of shape {np.shape(labels)} are not masks of shape {pred.shape}: mIoU "
                            "against labels empty")
    return result


def greedy_decode(ids: np.ndarray, blank_index: int | None) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of per-position argmax ids (N, T): collapse repeats, drop the blank.

    Without a blank index the per-position sequence is kept as is (not a CTC output).
    """
    decoded = []
    for row in ids:
        if blank_index is None:
            decoded.append(tuple(int(v) for v in row))
            continue
        keep = np.ones(row.shape, dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        decoded.append(tuple(int(v) for v in row[keep] if v != blank_index))
    return decoded


def sequence(out: np.ndarray, ref: np.ndarray, class_axis: int | None, name: str,
             blank_index: int | None) -> RoleResult:
    """Per-position argmax agreement and exact greedy-decoded sequence agreement, per image (batch first).

    The batch axis has already been moved first, so a time-major (T, N, C) output counts N images, not T·N.
    """
    if class_axis is None:
        raise ValueError(f"sequence output {name!r} needs a class axis (class_axis in the model card)")
    result = RoleResult()
    o = np.argmax(out, axis=class_axis).reshape(out.shape[0], -1)
    r = np.argmax(ref, axis=class_axis).reshape(ref.shape[0], -1)
    result.fields["position_agreement"] = float((o == r).mean())
    seq_agree = np.array([a == b for a, b in zip(greedy_decode(o, blank_index), greedy_decode(r, blank_index))])
    result.fields["sequence_agreement"] = float(seq_agree.mean())
    result.per_sample["sequence_agree"] = seq_agree
    if blank_index is None:
        result.notes.append(f"{name!r}: no blank_index in the model card: sequences compared position by position "
                            "(no CTC collapse)")
    return result


def embedding(out: np.ndarray, ref: np.ndarray) -> RoleResult:
    """Mean (and minimum) cosine similarity between each image's embedding and the reference's."""
    result = RoleResult()
    o = np.asarray(out, dtype=np.float64).reshape(out.shape[0], -1)
    r = np.asarray(ref, dtype=np.float64).reshape(ref.shape[0], -1)
    no, nr = np.linalg.norm(o, axis=1), np.linalg.norm(r, axis=1)
    both_zero = (no == 0) & (nr == 0)
    denom = np.where(no * nr > 0, no * nr, 1.0)
    cos = np.where(both_zero, 1.0, np.einsum("ij,ij->i", o, r) / denom)
    result.fields["embedding_cosine"] = float(cos.mean())
    result.fields["embedding_cosine_min"] = float(cos.min())
    return result


def decisive_channels(ref: np.ndarray, class_axis: int | None, role: str) -> np.ndarray | None:
    """Channels that decide something in the reference (bool per channel), or None when every channel counts.

    Scores (logits, probabilities, sequence, multi-channel masks): the channels that are the reference's argmax
    somewhere. Detection is decided in ``detection.decisive_channels``; other roles: every channel.
    """
    if class_axis is None or role not in ("logits", "probabilities", "sequence", "mask") or (
            role == "mask" and ref.shape[class_axis] == 1):
        return None
    out = np.zeros(ref.shape[class_axis], dtype=bool)
    out[np.unique(np.argmax(ref, axis=class_axis))] = True
    return out


def _finite(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)
