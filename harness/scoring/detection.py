"""Detection outputs: decode boxes and scores, then mAP@0.5 and mAP@0.5:0.95 through pycocotools' COCOeval.

The backend's detections are scored against the FP32 reference's detections (kept at score ≥
``REFERENCE_SCORE_MIN`` as pseudo ground truth) and, when the labels are boxes, against the labels. Matching,
precision/recall and the 101-point interpolation are COCOeval's own (the reference implementation of the metric);
what this module adds is decoding the model's output layout and class-wise NMS (IoU from ``pycocotools.mask.iou``).

Layouts (``OutputCard.detection_layout``; the fields axis is the card's ``class_axis``):
- ``boxes4+scoresK``: per candidate, 4 box values then K class scores (YOLOv8 exports: (N, 4+K, A), class_axis=1);
- ``boxes4+obj+scoresK``: 4 box values, an objectness score, K class scores (YOLOv5: (N, A, 5+K));
- ``boxes4+score+class``: rows already past NMS: 4 box values, a score, a class id (end-to-end exports).
Box formats (``OutputCard.box_format``): ``xyxy``, ``xywh`` (top-left corner, size), ``cxcywh`` (centre, size).
Label boxes: one array per image (an object array of length N) with rows (class_id, 4 box values) in the same
box format.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from harness.model.card import BOX_FORMATS, DETECTION_LAYOUTS
from harness.scoring.roles import RoleResult

#: Reference detections at or above this score are the pseudo ground truth (the common deployment threshold).
REFERENCE_SCORE_MIN = 0.25
#: Candidates below this score are dropped before NMS (COCO evaluation practice: keep low scores for recall).
PREDICTION_SCORE_MIN = 0.001
NMS_IOU = 0.45
#: COCOeval's maxDets for the headline mAP.
MAX_DETECTIONS = 100
#: Candidates per image entering NMS (as YOLO's max_nms): bounds the IoU matrix.
_MAX_NMS_CANDIDATES = 3000


@dataclass(frozen=True)
class Detections:
    """One image's detections: boxes (M, 4) as COCO xywh (top-left, size), scores (M,), class ids (M,)."""

    boxes_xywh: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def to_xywh(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """Boxes (M, 4) in ``box_format`` as COCO xywh (top-left corner, width, height)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box_format == "xyxy":
        return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    if box_format == "cxcywh":
        return np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 2], b[:, 3]], axis=1)
    if box_format == "xywh":
        return b.copy()
    raise ValueError(f"unknown box_format {box_format!r}; valid: {', '.join(BOX_FORMATS)}")


def nms(dets: Detections, iou_threshold: float = NMS_IOU, keep_max: int = MAX_DETECTIONS) -> Detections:
    """Greedy class-wise non-maximum suppression, highest score first; at most ``keep_max`` survive."""
    from pycocotools import mask as mask_utils

    if len(dets.scores) == 0:
        return dets
    order = np.argsort(-dets.scores, kind="stable")[:_MAX_NMS_CANDIDATES]
    boxes, scores, classes = dets.boxes_xywh[order], dets.scores[order], dets.classes[order]
    # Shift each class to its own region so boxes of different classes never overlap (one IoU matrix for all).
    shifted = boxes.copy()
    span = float(np.abs(boxes).max() + boxes[:, 2:].max() + 1.0)
    shifted[:, 0] += classes * span * 2
    iou = np.asarray(mask_utils.iou(shifted, shifted, [0] * len(shifted)))
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for i in range(len(scores)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == keep_max:
            break
        suppressed |= iou[i] > iou_threshold
    keep = np.asarray(keep, dtype=np.int64)
    return Detections(boxes[keep], scores[keep], classes[keep])


def decode(x: np.ndarray, fields_axis: int, layout: str, box_format: str, score_min: float,
           sigmoid: bool = False) -> list[Detections]:
    """Per-image detections from a batch-first detection output (see the module docstring for layouts).

    ``sigmoid``: the scores are logits (decided once from the reference) and get a sigmoid first.
    """
    rows = np.moveaxis(np.asarray(x, dtype=np.float64), fields_axis, -1)
    rows = rows.reshape(rows.shape[0], -1, rows.shape[-1])
    out = []
    for img in rows:
        boxes = to_xywh(img[:, :4], box_format)
        if layout == "boxes4+score+class":
            scores, classes = img[:, 4], img[:, 5].astype(np.int64)
            if sigmoid:
                scores = _sigmoid(scores)
        else:
            cls_scores = img[:, 5:] if layout == "boxes4+obj+scoresK" else img[:, 4:]
            if sigmoid:
                cls_scores = _sigmoid(cls_scores)
            classes = np.argmax(cls_scores, axis=1)
            scores = cls_scores[np.arange(len(img)), classes]
            if layout == "boxes4+obj+scoresK":
                scores = scores * (_sigmoid(img[:, 4]) if sigmoid else img[:, 4])
        keep = (scores >= score_min) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        dets = Detections(boxes[keep], scores[keep], classes[keep])
        out.append(dets if layout == "boxes4+score+class" else nms(dets))
    return out


def decisive_channels(ref: np.ndarray, fields_axis: int, layout: str | None) -> np.ndarray | None:
    """Box (and objectness) fields, plus the class-score fields that win a reference candidate scoring at least
    ``REFERENCE_SCORE_MIN``; None (every field) for rows already past NMS."""
    layout = layout or "boxes4+scoresK"
    if layout == "boxes4+score+class":
        return None
    first = 5 if layout == "boxes4+obj+scoresK" else 4
    scores = np.moveaxis(np.take(ref, np.arange(first, ref.shape[fields_axis]), axis=fields_axis), fields_axis, -1)
    scores = scores.reshape(-1, scores.shape[-1])
    out = np.zeros(ref.shape[fields_axis], dtype=bool)
    out[:first] = True
    if scores.size:
        strong = scores.max(axis=1) >= REFERENCE_SCORE_MIN
        out[first + np.unique(scores[strong].argmax(axis=1))] = True
    return out


def labels_as_detections(labels: np.ndarray, box_format: str) -> list[Detections]:
    """Label boxes: per image an array of rows (class_id, 4 box values) in ``box_format``."""
    out = []
    for rows in labels:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        out.append(Detections(to_xywh(rows[:, 1:], box_format), np.ones(len(rows)), rows[:, 0].astype(np.int64)))
    return out


def coco_map(truth: list[Detections], predicted: list[Detections]) -> tuple[float | None, float | None, str | None]:
    """(mAP@0.5, mAP@0.5:0.95, note) of ``predicted`` against ``truth`` (same images), by COCOeval ('bbox').

    None with a note when there is no ground-truth box at all (mAP is undefined there).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    n_truth = sum(len(d.scores) for d in truth)
    if n_truth == 0:
        return None, None, "no ground-truth box on any image: mAP undefined"
    if sum(len(d.scores) for d in predicted) == 0:
        return 0.0, 0.0, "no detection on any image"
    images = [{"id": i + 1} for i in range(len(truth))]
    cats = sorted({int(c) for d in truth + predicted for c in d.classes})
    anns, results = [], []
    for i, d in enumerate(truth):
        for box, cls in zip(d.boxes_xywh, d.classes):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(cls),
                         "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0})
    for i, d in enumerate(predicted):
        for box, score, cls in zip(d.boxes_xywh, d.scores, d.classes):
            results.append({"image_id": i + 1, "category_id": int(cls), "bbox": [float(v) for v in box],
                            "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress and its summary table
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, MAX_DETECTIONS]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    map50_95, map50 = float(ev.stats[0]), float(ev.stats[1])
    return (map50 if map50 >= 0 else None), (map50_95 if map50_95 >= 0 else None), None


def detection(out: np.ndarray, ref: np.ndarray, fields_axis: int | None, labels: np.ndarray | None, name: str,
              layout: str | None, box_format: str | None) -> RoleResult:
    """mAP of the backend's detections against the FP32 reference's (and against label boxes when given)."""
    result = RoleResult()
    if layout is None:
        layout = "boxes4+scoresK"
        result.notes.append(f"{name!r}: no detection_layout in the model card: read as {layout}")
    if layout not in DETECTION_LAYOUTS:
        raise ValueError(f"output {name!r}: unknown detection_layout {layout!r}; valid: {', '.join(DETECTION_LAYOUTS)}")
    if box_format not in BOX_FORMATS:
        result.notes.append(f"{name!r}: box_format {box_format!r} is not one of {', '.join(BOX_FORMATS)}: set it in "
                            "the model card; mAP empty")
        return result
    if fields_axis is None:
        raise ValueError(f"detection output {name!r} needs the axis of its box/score fields (class_axis)")
    score_cols = np.take(ref, np.arange(4, ref.shape[fields_axis] - (1 if layout.endswith("class") else 0)),
                         axis=fields_axis)
    sigmoid = bool(score_cols.size) and (float(score_cols.min()) < 0.0 or float(score_cols.max()) > 1.0)
    if sigmoid:
        result.notes.append(f"{name!r}: scores outside [0, 1] in the reference: read as logits (sigmoid applied)")
    truth = decode(ref, fields_axis, layout, box_format, REFERENCE_SCORE_MIN, sigmoid)
    predicted = decode(out, fields_axis, layout, box_format, PREDICTION_SCORE_MIN, sigmoid)
    kept = [Detections(d.boxes_xywh[d.scores >= REFERENCE_SCORE_MIN], d.scores[d.scores >= REFERENCE_SCORE_MIN],
                       d.classes[d.scores >= REFERENCE_SCORE_MIN]) for d in predicted]
    result.fields["detections_per_image"] = float(np.mean([len(d.scores) for d in kept]))
    result.fields["reference_detections_per_image"] = float(np.mean([len(d.scores) for d in truth]))
    map50, map50_95, note = coco_map(truth, predicted)
    result.fields.update(map50=map50, map50_95=map50_95)
    if note:
        result.notes.append(f"{name!r} vs the FP32 reference: {note}")
    if labels is None:
        result.notes.append("no labels: mAP against labels empty (mAP against the FP32 detections is given)")
    elif np.asarray(labels).dtype == object and len(labels) == len(predicted):
        map50, map50_95, note = coco_map(labels_as_detections(labels, box_format), predicted)
        result.fields.update(map50_labels=map50, map50_95_labels=map50_95)
        if note:
            result.notes.append(f"{name!r} vs labels: {note}")
    else:
        result.notes.append("labels are not boxes (one array of (class_id, box) rows per image): mAP against labels "
                            "empty")
    return result


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))
