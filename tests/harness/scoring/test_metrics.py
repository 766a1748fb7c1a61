from __future__ import annotations

import numpy as np
import pytest

from harness.scoring import metrics
def test_logit_mse_is_mean_squared_l2_distance_per_sample():
    ref = np.array([[1.0, 2.0], [0.0, 0.0]])
    out = np.array([[1.0, 4.0], [3.0, 4.0]])
    # ||(0,2)||² = 4, ||(3,4)||² = 25 → mean 14.5
    assert metrics.logit_mse(out, ref) == pytest.approx(14.5)


def test_snr_db_matches_definition():
    ref = np.array([3.0, 4.0])
    out = np.array([3.0, 3.0])
    assert metrics.snr_db(out, ref) == pytest.approx(10 * np.log10(25.0 / 1.0))


def test_snr_of_identical_outputs_is_infinite():
    x = np.ones((2, 3))
    assert metrics.snr_db(x, x) == float("inf")


def test_brier_hand_worked_example():
    # softmax([0, 0]) = (0.5, 0.5); label 0 → (0.5-1)² + 0.5² = 0.5
    assert metrics.brier(np.zeros((1, 2)), np.array([0])) == pytest.approx(0.5)


def test_brier_of_confident_correct_prediction_is_near_zero():
    logits = np.array([[50.0, 0.0, 0.0]])
    assert metrics.brier(logits, np.array([0])) == pytest.approx(0.0, abs=1e-12)


def test_ece_matches_torchmetrics():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.classification")
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (500, 10))
    labels = rng.integers(0, 10, 500)
    expected = tm.multiclass_calibration_error(torch.tensor(logits).softmax(1), torch.tensor(labels),
                                               num_classes=10, n_bins=15, norm="l1").item()
    assert metrics.ece(logits, labels) == pytest.approx(expected, abs=1e-6)


def test_topk_accuracy_counts_label_among_k_highest():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.07, 0.03]])
    labels = np.array([2, 2])
    assert metrics.topk_accuracy(logits, labels, 1) == 0.0
    assert metrics.topk_accuracy(logits, labels, 2) == 0.5
    assert metrics.topk_accuracy(logits, labels, 3) == 1.0


def test_top1_agreement_compares_argmaxes():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = np.array([[2.0, 0.0], [3.0, 1.0]])
    assert metrics.top1_agreement(out, ref) == 0.5


def test_miou_hand_worked():
    true = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    # class 0: inter 1, union 2 → 0.5; class 1: inter 2, union 3 → 2/3
    assert metrics.miou(pred, true, 2) == pytest.approx((0.5 + 2 / 3) / 2)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        metrics.logit_mse(np.zeros((2, 3)), np.zeros((2, 4)))
