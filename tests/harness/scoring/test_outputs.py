"""score_outputs: every output scored by its role against the FP32 reference (stand-in cards until the card lands)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.scoring import NonFiniteOutputs, score_outputs
from harness.scoring import metrics
from harness.model.card import OutputCard


def _classifier(n: int = 400, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 3.0 * np.eye(k)[labels] * rng.random((n, 1))
    noisy = logits + rng.normal(0, 0.3, logits.shape)
    return logits.astype(np.float32), noisy.astype(np.float32), labels


def test_probabilities_output_is_scored_as_given_not_softmaxed_again():
    ref_logits, out_logits, labels = _classifier()
    as_logits = score_outputs([out_logits], [ref_logits], [OutputCard("y", "logits")], labels)
    probs_out, probs_ref = metrics.softmax(out_logits), metrics.softmax(ref_logits)
    as_probs = score_outputs([probs_out], [probs_ref], [OutputCard("y", "probabilities")], labels)
    assert as_probs.fields["ece"] == pytest.approx(as_logits.fields["ece"], abs=1e-9)
    assert as_probs.fields["brier"] == pytest.approx(as_logits.fields["brier"], abs=1e-9)
    assert abs(metrics.ece(probs_out, labels) - as_probs.fields["ece"]) > 0.1  # what a second softmax gives


def test_probabilities_mse_does_not_call_itself_logit_mse():
    ref_logits, out_logits, labels = _classifier()
    probs_out, probs_ref = metrics.softmax(out_logits), metrics.softmax(ref_logits)
    s = score_outputs([probs_out], [probs_ref], [OutputCard("p", "probabilities")], labels)
    assert "logit_mse" not in s.fields
    assert s.fields["probability_mse"] == pytest.approx(np.mean(np.sum((probs_out - probs_ref) ** 2, axis=1)))


def test_two_outputs_with_the_logits_second_fill_the_top_level_from_the_logits():
    ref_logits, out_logits, labels = _classifier()
    emb = np.random.default_rng(3).normal(size=(len(labels), 16)).astype(np.float32)
    cards = [OutputCard("features", "embedding"), OutputCard("logits", "logits")]
    s = score_outputs([emb, out_logits], [emb, ref_logits], cards, labels)
    assert s.fields["primary_output"] == "logits"
    assert s.fields["top1"] == pytest.approx(np.mean(out_logits.argmax(1) == labels))
    assert s.fields["logit_mse"] == pytest.approx(metrics.logit_mse(out_logits, ref_logits))
    assert [row["name"] for row in s.per_output] == ["features", "logits"]
    assert s.per_output[0]["embedding_cosine"] == pytest.approx(1.0)
    assert s.per_sample["top1_correct"].shape == (len(labels),)


def test_exact_match_gives_null_snr_an_explicit_flag_and_strict_json():
    ref_logits, _, labels = _classifier()
    s = score_outputs([ref_logits.copy()], [ref_logits], [OutputCard("y", "logits")], labels)
    assert s.fields["snr_db"] is None and s.fields["exact_match"] is True
    assert s.per_output[0]["snr_db"] is None and s.per_output[0]["exact_match"] is True
    json.dumps({"fields": s.fields, "outputs": s.per_output}, allow_nan=False)  # no bare Infinity or NaN


def test_nan_in_backend_outputs_raises_k_of_n():
    ref_logits, out_logits, labels = _classifier()
    bad = out_logits.copy()
    bad[5, 2] = np.nan
    cards = [OutputCard("a", "logits"), OutputCard("b", "logits")]
    with pytest.raises(NonFiniteOutputs, match=r"1 of 2 outputs non-finite \(backend\): 'b': 1 NaN, 0 Inf"):
        score_outputs([out_logits, bad], [ref_logits, ref_logits], cards, labels)


def test_inf_in_the_reference_raises_k_of_n():
    ref_logits, out_logits, labels = _classifier()
    bad = ref_logits.copy()
    bad[0, 0] = np.inf
    with pytest.raises(NonFiniteOutputs, match=r"1 of 1 outputs non-finite \(FP32 reference\)"):
        score_outputs([out_logits], [bad], [OutputCard("y", "logits")], labels)


def test_regression_output_is_not_scored_as_logits():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 10, (50, 3))
    out = ref + np.array([0.0, 0.5, -2.0])
    s = score_outputs([out], [ref], [OutputCard("depth_m", "regression")], np.zeros(50, dtype=int))
    assert s.fields["output_mse"] == pytest.approx((0.25 + 4.0) / 3)
    assert s.fields["output_max_abs_error"] == pytest.approx(2.0)
    assert not {"top1", "logit_mse", "ece"} & set(s.fields)


def test_per_channel_snr_shows_the_one_broken_channel():
    ref_logits, _, labels = _classifier()
    out = ref_logits.copy()
    out[:, 7] = 0.0  # one class-score channel zeroed by a fault: 0 dB, however good the rest is
    s = score_outputs([out], [ref_logits], [OutputCard("y", "logits")], labels)
    row = s.per_output[0]
    assert [(ch["channel"], ch["snr_db"]) for ch in row["worst_channels"]] == [(7, 0.0)]
    assert row["worst_channels"][0]["signal_share"] == pytest.approx(
        np.sum(ref_logits[:, 7].astype(np.float64) ** 2) / np.sum(ref_logits.astype(np.float64) ** 2))
    assert row["channels"] == 10 and row["channels_snr_le_0db"] == 1
    assert row["dead_channels"] == [7] and s.fields["dead_output_channels"] == 1
    assert s.fields["worst_channel_snr_db"] == 0.0
    assert s.fields["snr_db"] > 5.0  # the whole-tensor SNR alone would hide it


def test_labels_outside_the_class_range_leave_label_metrics_empty_with_the_reason():
    ref_logits, out_logits, _ = _classifier(k=10)
    labels = np.full(len(ref_logits), 12)
    s = score_outputs([out_logits], [ref_logits], [OutputCard("y", "logits")], labels)
    assert "top1" not in s.fields and "top1_agreement" in s.fields
    assert any("output has 10 classes" in n for n in s.fields["scoring_notes"])


def test_outputs_with_different_sample_counts_are_refused():
    cards = [OutputCard("a", "raw"), OutputCard("b", "raw")]
    x, y = np.zeros((4, 3)), np.zeros((5, 3))
    with pytest.raises(ValueError, match="check batch_axis"):
        score_outputs([x, y], [x, y], cards, None)


def test_a_rare_class_rounded_to_a_constant_is_low_snr_but_not_dead():
    ref_logits, _, labels = _classifier()
    probs_ref = metrics.softmax(ref_logits)
    probs_ref[:, 9] = 1e-9 * (1 + np.arange(len(probs_ref)) % 3)   # a class the images never show
    probs_out = probs_ref.copy()
    probs_out[:, 9] = 0.0                                            # INT8 rounds it to a constant 0
    s = score_outputs([probs_out], [probs_ref], [OutputCard("p", "probabilities")], labels)
    worst = s.per_output[0]["worst_channels"][0]
    assert worst["channel"] == 9 and worst["snr_db"] == 0.0 and worst["signal_share"] < 1e-12
    assert s.per_output[0]["dead_channels"] == [] and s.fields["dead_output_channels"] == 0
