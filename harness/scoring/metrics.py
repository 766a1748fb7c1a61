"""Fidelity metrics against the FP32 ONNX Runtime reference (numpy only).

Definitions follow the design doc: logit MSE as in paper §5.3, SNR as Hailo/AIMET report it, ECE as
Guo et al. (2017) with equal-width bins, the multi-class Brier score.
"""
from __future__ import annotations

import numpy as np


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


def _check_same_shape(out: np.ndarray, ref: np.ndarray) -> None:
    if np.shape(out) != np.shape(ref):
        raise ValueError(f"output shape {np.shape(out)} differs from reference shape {np.shape(ref)}")


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def mean_squared_l2(out: np.ndarray, ref: np.ndarray) -> float:
    """Mean over samples of the squared L2 distance between per-sample vectors: 1/N Σ_i ||out_i − ref_i||²."""
    _check_same_shape(out, ref)
    d = _as_2d(out) - _as_2d(ref)
    return float(np.mean(np.sum(d * d, axis=1)))


def logit_mse(out: np.ndarray, ref: np.ndarray) -> float:
    """Paper §5.3's logit MSE: ``mean_squared_l2`` of logit vectors (N, K)."""
    return mean_squared_l2(out, ref)


def snr_db(out: np.ndarray, ref: np.ndarray) -> float:
    """10·log10(Σ ref² / Σ (ref − out)²) over the whole tensor; +inf when identical."""
    _check_same_shape(out, ref)
    ref = np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(out, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref * ref))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def cosine_similarity(out: np.ndarray, ref: np.ndarray) -> float:
    """Cosine similarity of the flattened tensors (1.0 when both are zero)."""
    _check_same_shape(out, ref)
    a = np.asarray(out, dtype=np.float64).ravel()
    b = np.asarray(ref, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def ece(logits: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of logits (N, K): ``ece_probs`` of their softmax."""
    return ece_probs(softmax(logits), labels, n_bins)


def ece_probs(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of probabilities (N, K) as given (no softmax): Σ_b |B_b|/N · |acc − conf|.

    Equal-width confidence bins (lo, hi], the first bin also takes confidence 0.
    """
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are (lo, hi]; the clip puts a confidence of exactly 0 (possible for given probabilities) in bin 0.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(total)


def brier(logits: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score of logits (N, K): ``brier_probs`` of their softmax."""
    return brier_probs(softmax(logits), labels)


def brier_probs(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score of probabilities (N, K) as given: mean over samples of Σ_k (p_k − onehot_k)²."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.zeros_like(probs)
    onehot[np.arange(probs.shape[0]), np.asarray(labels)] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose label is among the k highest logits."""
    logits = np.asarray(logits)
    k = min(k, logits.shape[1])
    topk = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(topk == np.asarray(labels)[:, None], axis=1)))


def top1_agreement(out: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of samples where the argmax of ``out`` equals the reference's argmax."""
    _check_same_shape(out, ref)
    return float(np.mean(np.argmax(out, axis=1) == np.argmax(ref, axis=1)))


def miou(pred_mask: np.ndarray, true_mask: np.ndarray, n_classes: int) -> float:
    """Mean intersection over union over classes present in either mask."""
    pred = np.asarray(pred_mask).ravel()
    true = np.asarray(true_mask).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"mask shapes differ: {np.shape(pred_mask)} vs {np.shape(true_mask)}")
    cm = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    present = union > 0
    if not present.any():
        return float("nan")
    return float(np.mean(inter[present] / union[present]))


def classification_fidelity(out: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every classification metric the record carries, in one dict (field names = record fields)."""
    return {
        "top1": topk_accuracy(out, labels, 1),
        "top5": topk_accuracy(out, labels, 5),
        "top1_agreement": top1_agreement(out, ref),
        "logit_mse": logit_mse(out, ref),
        "snr_db": snr_db(out, ref),
        "ece": ece(out, labels),
        "brier": brier(out, labels),
    }


def segmentation_fidelity(out: np.ndarray, ref: np.ndarray, true_mask: np.ndarray) -> dict[str, float]:
    """Segmentation logits (N, K, H, W): mIoU against the labels and agreement with the reference."""
    n_classes = out.shape[1]
    pred = out.argmax(axis=1)
    return {
        "miou": miou(pred, true_mask, n_classes),
        "miou_vs_reference": miou(pred, ref.argmax(axis=1), n_classes),
        "top1_agreement": float(np.mean(pred == ref.argmax(axis=1))),
        "logit_mse": logit_mse(out, ref),
        "snr_db": snr_db(out, ref),
    }
