"""Tensor-level fidelity of one output against the same output of the FP32 reference, whatever its shape.

Every output gets SNR (dB), MSE, cosine similarity and max abs error over the whole tensor, plus a per-channel
SNR along the card's ``class_axis`` so one dead channel (a class-score channel zeroed by a fault reads 0 dB)
is visible instead of averaged away. Sums are accumulated over sample chunks in float64 so a detector's
(N, 84, 8400) output is not copied whole into float64.

Values here are strict JSON: an exact match has SNR +inf mathematically, which JSON cannot carry, so it is
reported as ``snr_db=None`` with ``exact_match=True``; a reference that is all zero (SNR −inf) is ``None``
with a note.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: How many of the worst channels each output lists (the full count at ≤ 0 dB is given beside it).
WORST_CHANNELS = 8
#: A channel at or below this SNR carries no more signal than error (zeroed, sign-flipped, or under the
#: precision's resolution); a zeroed channel reads exactly 0 dB.
LOW_CHANNEL_SNR_DB = 0.0
#: Dead channels listed by index per output (the count covers all of them).
MAX_DEAD_LISTED = 32
#: Elements per accumulation chunk (≈ 32 MiB of float64 per temporary).
_CHUNK_ELEMENTS = 1 << 22


class NonFiniteOutputs(ValueError):
    """NaN or Inf in a backend's outputs or in the FP32 reference: the job fails at validate, never ``ok``."""


def normalise_axis(axis: int, ndim: int, what: str) -> int:
    """``axis`` as a non-negative index into a tensor of ``ndim`` dims; ValueError naming ``what`` otherwise."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what} {axis} is out of range for a {ndim}-D output; fix it in the model card")
    return axis % ndim


def batch_first(x: np.ndarray, batch_axis: int, class_axis: int | None, name: str) -> tuple[np.ndarray, int | None]:
    """``x`` with its batch axis moved to 0 (a view) and where ``class_axis`` lands after the move.

    A time-major (T, N, C) output with batch_axis=1 becomes (N, T, C), so N counts images, not T× them.
    Raises ValueError when the axes are out of range or the class axis is the batch axis.
    """
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"output {name!r} is a scalar: it has no batch axis to score per image")
    b = normalise_axis(batch_axis, x.ndim, f"output {name!r}: batch_axis")
    order = [b] + [i for i in range(x.ndim) if i != b]
    moved = np.moveaxis(x, b, 0)
    if class_axis is None or x.ndim == 1:
        return moved, None
    c = normalise_axis(class_axis, x.ndim, f"output {name!r}: class_axis")
    if c == b:
        raise ValueError(f"output {name!r}: class_axis {class_axis} is the batch axis; fix it in the model card")
    return moved, order.index(c)


def check_finite(arrays: Sequence[np.ndarray], names: Sequence[str], who: str) -> None:
    """Raise NonFiniteOutputs("k of N outputs non-finite ...") when any array holds NaN or ±Inf.

    ``who`` says whose outputs they are ("backend", "FP32 reference"); the message names each bad output with
    its NaN and Inf counts, so the record says what broke.
    """
    bad = []
    for name, arr in zip(names, arrays):
        arr = np.asarray(arr)
        if arr.dtype.kind not in "fc":
            continue  # integers and booleans cannot hold NaN/Inf
        nan = int(np.isnan(arr).sum())
        inf = int(np.isinf(arr).sum())
        if nan or inf:
            bad.append(f"{name!r}: {nan} NaN, {inf} Inf of {arr.size} values")
    if bad:
        hint = ("the FP32 model itself produces them on these inputs: check the input preprocessing (scale, "
                "mean/std) in the model card" if "reference" in who else
                "the backend's arithmetic overflowed or a kernel is broken at this precision")
        raise NonFiniteOutputs(f"{len(bad)} of {len(arrays)} outputs non-finite ({who}): {'; '.join(bad)} — {hint}")


@dataclass(frozen=True)
class TensorStats:
    """Whole-tensor sums of one output against its reference (float64)."""

    signal: float         # Σ ref²
    noise: float          # Σ (out − ref)²
    dot: float            # Σ out·ref
    out_sq: float         # Σ out²
    max_abs: float        # max |out − ref|
    size: int
    channel_signal: np.ndarray | None   # Σ ref² per channel
    channel_noise: np.ndarray | None    # Σ (out − ref)² per channel
    channel_dead: np.ndarray | None     # bool per channel: the output is constant where the reference varies


def accumulate(out: np.ndarray, ref: np.ndarray, channel_axis: int | None) -> TensorStats:
    """Sums over batch-first ``out`` and ``ref`` (same shape), per channel along ``channel_axis`` (≥ 1) too."""
    if out.shape != ref.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
    n = out.shape[0]
    per_sample = max(1, int(np.prod(out.shape[1:], dtype=np.int64)))
    step = max(1, _CHUNK_ELEMENTS // per_sample)
    signal = noise = dot = out_sq = 0.0
    max_abs = 0.0
    ch_sig = ch_noise = None
    if channel_axis is not None:
        reduce = tuple(i for i in range(out.ndim) if i != channel_axis)
        c = out.shape[channel_axis]
        ch_sig, ch_noise = np.zeros(c), np.zeros(c)
        o_lo, o_hi, r_lo, r_hi = np.full(c, np.inf), np.full(c, -np.inf), np.full(c, np.inf), np.full(c, -np.inf)
    for start in range(0, n, step):
        o = np.asarray(out[start:start + step], dtype=np.float64)
        r = np.asarray(ref[start:start + step], dtype=np.float64)
        d = o - r
        d2 = d * d
        r2 = r * r
        signal += float(r2.sum())
        noise += float(d2.sum())
        dot += float((o * r).sum())
        out_sq += float((o * o).sum())
        if d.size:
            max_abs = max(max_abs, float(np.abs(d).max()))
        if channel_axis is not None:
            ch_sig += r2.sum(axis=reduce)
            ch_noise += d2.sum(axis=reduce)
            if o.size:
                o_lo, o_hi = np.minimum(o_lo, o.min(axis=reduce)), np.maximum(o_hi, o.max(axis=reduce))
                r_lo, r_hi = np.minimum(r_lo, r.min(axis=reduce)), np.maximum(r_hi, r.max(axis=reduce))
    dead = None if channel_axis is None else (o_hi - o_lo == 0) & (r_hi - r_lo > 0)
    return TensorStats(signal, noise, dot, out_sq, max_abs, int(out.size), ch_sig, ch_noise, dead)


def snr_from_sums(signal: float, noise: float) -> tuple[float | None, bool, str | None]:
    """(snr_db or None, exact_match, note): 10·log10(signal/noise) as the design doc defines it."""
    if noise == 0.0:
        return None, True, None
    if signal == 0.0:
        return None, False, "the reference is all zero: SNR is −inf dB (any error is all error)"
    return float(10.0 * np.log10(signal / noise)), False, None


def tensor_metrics(stats: TensorStats) -> dict[str, Any]:
    """snr_db, exact_match, mse (output units²), cosine, max_abs_error (output units) of one output."""
    snr, exact, note = snr_from_sums(stats.signal, stats.noise)
    norm = np.sqrt(stats.out_sq * stats.signal)
    if stats.out_sq == 0.0 and stats.signal == 0.0:
        cosine = 1.0
    else:
        cosine = float(stats.dot / norm) if norm > 0 else 0.0
    out: dict[str, Any] = {"snr_db": snr, "exact_match": exact, "mse": stats.noise / max(stats.size, 1),
                           "cosine": cosine, "max_abs_error": stats.max_abs}
    if note:
        out["snr_note"] = note
    return out


def worst_channels(stats: TensorStats, decisive: np.ndarray | None = None,
                   keep: int = WORST_CHANNELS) -> dict[str, Any]:
    """The per-channel SNR table: the ``keep`` worst channels, how many are at ≤ 0 dB, which are dead.

    Each row is {channel, snr_db, signal_share, exact_match}; ``signal_share`` is the channel's part of the
    reference's energy (a −40 dB channel holding 1e-9 of it is a rare class under the precision's resolution,
    not a broken one). A channel whose reference is all zero but whose output is not has snr_db None (−inf) and
    sorts first. ``dead_channels``: channels whose output is constant where the reference varies (zeroed by a
    fault, saturated), among the ``decisive`` ones (bool per channel, None: all) — a channel that decides
    something in the reference (see ``roles.decisive_channels``), so a vocabulary entry no image shows, rounded
    to a constant 0 at INT8, is not called dead; at most ``MAX_DEAD_LISTED`` listed, ``dead_channel_count`` all.
    """
    if stats.channel_signal is None:
        return {"channels": None, "channels_snr_le_0db": None, "dead_channel_count": None, "dead_channels": [],
                "worst_channels": []}
    total = float(stats.channel_signal.sum())
    rows = []
    for c, (sig, noise) in enumerate(zip(stats.channel_signal, stats.channel_noise)):
        snr, exact, _ = snr_from_sums(float(sig), float(noise))
        key = np.inf if exact else (-np.inf if snr is None else snr)
        share = float(sig) / total if total > 0 else None
        rows.append((key, {"channel": c, "snr_db": snr, "signal_share": share, "exact_match": exact}))
    rows.sort(key=lambda kv: kv[0])
    le_0db = sum(1 for key, _ in rows if key <= LOW_CHANNEL_SNR_DB)
    dead_mask = stats.channel_dead if decisive is None else stats.channel_dead & decisive
    dead = [int(c) for c in np.flatnonzero(dead_mask)]
    return {"channels": len(rows), "channels_snr_le_0db": le_0db, "dead_channel_count": len(dead),
            "dead_channels": dead[:MAX_DEAD_LISTED],
            "worst_channels": [row for key, row in rows[:keep] if not row["exact_match"]]}
