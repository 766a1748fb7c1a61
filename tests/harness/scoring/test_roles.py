"""Role metrics for sequence, mask and embedding outputs, through score_outputs."""
from __future__ import annotations

import numpy as np
import pytest

from harness.scoring import score_outputs
from harness.model.card import OutputCard


def _one_hot_scores(ids: np.ndarray, c: int) -> np.ndarray:
    return np.eye(c, dtype=np.float32)[ids] * 5.0


def test_time_major_sequence_counts_images_not_positions():
    t, n, c = 6, 4, 4
    ref_ids = np.array([[1, 1, 0, 2, 2, 0], [1, 1, 0, 2, 3, 3], [3, 0, 3, 0, 1, 1], [2, 2, 2, 0, 0, 1]])
    out_ids = ref_ids.copy()
    out_ids[1, 1] = 0   # [1,0,0,2,3,3] still decodes to 1,2,3: positions differ, the sequence does not
    out_ids[2, 5] = 2   # decodes 3,3,1,2 instead of 3,3,1: the sequence differs
    ref = np.transpose(_one_hot_scores(ref_ids, c), (1, 0, 2))  # (T, N, C), time-major
    out = np.transpose(_one_hot_scores(out_ids, c), (1, 0, 2))
    card = OutputCard("ctc", "sequence", batch_axis=1, class_axis=2, blank_index=0)
    s = score_outputs([out], [ref], [card], None)
    row = s.per_output[0]
    assert row["samples"] == n
    assert row["position_agreement"] == pytest.approx(1 - 2 / (t * n))
    assert row["sequence_agreement"] == pytest.approx(0.75)
    assert s.per_sample["sequence_agree"].tolist() == [True, True, False, True]


def test_mask_miou_against_reference_and_labels():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    labels = ref.argmax(axis=1)
    out = ref.copy()
    s = score_outputs([out], [ref], [OutputCard("seg", "mask", class_axis=1)], labels)
    assert s.fields["miou_vs_reference"] == pytest.approx(1.0)
    assert s.fields["miou"] == pytest.approx(1.0)
    assert s.fields["pixel_agreement"] == pytest.approx(1.0)


def test_single_channel_probability_map_is_a_binary_mask():
    ref = np.zeros((1, 1, 4, 4), dtype=np.float32)
    ref[0, 0, :2, :2] = 0.9          # a 2x2 text region
    out = ref.copy()
    out[0, 0, 0, 0] = 0.1            # one region pixel lost
    s = score_outputs([out], [ref], [OutputCard("prob_map", "mask", class_axis=1)], None)
    # background: 12 / 13 union pixels; text: 3 / 4 → mean 0.8365…
    assert s.fields["miou_vs_reference"] == pytest.approx((12 / 13 + 3 / 4) / 2)


def test_embedding_mean_cosine():
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    out = np.array([[1.0, 1.0], [0.0, 3.0]])
    s = score_outputs([out], [ref], [OutputCard("emb", "embedding")], None)
    assert s.fields["embedding_cosine"] == pytest.approx((np.sqrt(0.5) + 1.0) / 2)
    assert s.fields["embedding_cosine_min"] == pytest.approx(np.sqrt(0.5))
