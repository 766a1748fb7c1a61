"""Detection outputs: mAP through pycocotools' COCOeval, and a fault that zeroes the class-score channels."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from harness.scoring import score_outputs  # noqa: E402
from harness.scoring.detection import Detections, coco_map, nms  # noqa: E402
from harness.model.card import OutputCard  # noqa: E402

K = 3
CARD = OutputCard("det", "detection", class_axis=1, box_format="cxcywh", detection_layout="boxes4+scoresK")


def _yolo_like(n: int = 4, anchors: int = 60, seed: int = 0) -> np.ndarray:
    """A YOLOv8-style output (N, 4+K, A): three objects per image, the other anchors at score 0.01."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 4 + K, anchors), dtype=np.float32)
    out[:, 0:2] = rng.uniform(50, 550, (n, 2, anchors))
    out[:, 2:4] = rng.uniform(10, 40, (n, 2, anchors))
    out[:, 4:] = 0.01
    for i in range(n):
        for j, a in enumerate((3, 17, 42)):
            out[i, 0:2, a] = (100 + 180 * j, 100 + 150 * j)   # well apart: no NMS interplay
            out[i, 2:4, a] = (80, 60)
            out[i, 4 + j % K, a] = 0.9
    return out


def test_identical_detections_have_map_one():
    ref = _yolo_like()
    s = score_outputs([ref.copy()], [ref], [CARD], None)
    assert s.fields["map50"] == pytest.approx(1.0) and s.fields["map50_95"] == pytest.approx(1.0)
    assert s.fields["reference_detections_per_image"] == 3.0


def test_shifted_boxes_lower_the_strict_map():
    ref = _yolo_like()
    out = ref.copy()
    out[:, 0, :] += 12.0   # every box 12 px to the right: IoU 68/92 ≈ 0.74 with its reference box
    s = score_outputs([out], [ref], [CARD], None)
    assert s.fields["map50"] == pytest.approx(1.0)
    assert s.fields["map50_95"] == pytest.approx(0.5)  # matched at IoU 0.50..0.70: 5 of the 10 thresholds


def test_zeroed_class_score_channels_show_at_0_db_and_zero_map():
    ref = _yolo_like()
    out = ref.copy()
    out[:, 4:, :] = 0.0    # the fault: every class-score channel dead, boxes intact
    s = score_outputs([out], [ref], [CARD], None)
    row = s.per_output[0]
    assert [ch["channel"] for ch in row["worst_channels"]] == [4, 5, 6]
    assert all(ch["snr_db"] == 0.0 for ch in row["worst_channels"])
    assert row["channels_snr_le_0db"] == K and row["dead_channels"] == [4, 5, 6]
    assert s.fields["worst_channel_snr_db"] == 0.0
    assert s.fields["map50"] == 0.0 and s.fields["detections_per_image"] == 0.0
    assert any("3 of 7 channels at ≤ 0 dB" in n for n in s.fields["scoring_notes"])


def test_map_against_label_boxes():
    ref = _yolo_like(n=2)
    labels = np.empty(2, dtype=object)
    for i in range(2):
        labels[i] = np.array([[j % K, 100 + 180 * j, 100 + 150 * j, 80, 60] for j in range(3)], dtype=np.float64)
    s = score_outputs([ref.copy()], [ref], [CARD], labels)
    assert s.fields["map50_labels"] == pytest.approx(1.0)


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [1, 1, 10, 10]], dtype=np.float64)
    dets = nms(Detections(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1])))
    assert dets.scores.tolist() == [0.9, 0.7]   # the second overlaps the first in class 0; the third is class 1


def test_no_reference_box_leaves_map_empty_with_the_reason():
    empty = [Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int))]
    assert coco_map(empty, empty) == (None, None, "no ground-truth box on any image: mAP undefined")
