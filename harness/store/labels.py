"""What a record's numbers are, in words: precision labels, where a timing came from, which fidelity field a view's
agreement and MSE columns show.

The ONE place that turns record fields (``precision``, ``per_channel``, ``calibration_method``, activation
signedness, ``measured_on``, ``simulated``, ``timing_note``, ``extra``) into the labels every view shows: the
run summary, ``compare``, plots and the report. ``harness.store.reader`` adds them as derived columns
(``precision_label``, ``timing_origin``, ``untuned``); the run summary calls these functions on JobRecords.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

#: Where a job's timing came from. "device": timed on the device itself; "stand-in": timed on another machine
#: (the host CPU standing in for an absent device); "simulated": a simulator or emulation, says nothing about
#: the device's speed; "estimated": a compiler's performance model (Vela), nothing was timed.
TIMING_ORIGINS = ("device", "stand-in", "simulated", "estimated")
ORIGIN_LABELS = {"device": "measured on the device", "stand-in": "stand-in (timed on another machine)",
                 "simulated": "simulated / emulated timing",
                 "estimated": "estimated by the compiler's performance model (not measured)"}

_WA = re.compile(r"^w(\d+)a(\d+|bf16|fp16)$")


def activation_signed(rec: Mapping[str, Any], profile: Mapping[str, Any] | None = None) -> bool | None:
    """True (S8 activations), False (U8) or None (unknown / not integer activations).

    Read from the record (``activation_signed`` field or ``extra``), else from the device profile's quantization
    policy for this precision, which is what the planner gave the job.
    """
    for source in (rec, rec.get("extra") or {}):
        value = source.get("activation_signed") if isinstance(source, Mapping) else None
        if isinstance(value, bool):
            return value
    for policy in (profile or {}).get("quant_policies") or ():
        if isinstance(policy, Mapping) and policy.get("name") == rec.get("precision"):
            act = policy.get("activation")
            return True if act == "int8" else False if act == "uint8" else None
    if profile is not None and str(rec.get("backend") or "").startswith("onnxruntime"):
        return False  # no policy: the planner asks for unsigned activations, and ONNX Runtime honours it
    return None


def _bits(precision: str) -> tuple[str, str] | None:
    """(weight bits, activation bits) for integer-activation precisions, else None."""
    if precision == "int8":
        return "8", "8"
    m = _WA.match(precision)
    if m and m.group(2).isdigit():
        return m.group(1), m.group(2)
    return None


def precision_label(rec: Mapping[str, Any], profile: Mapping[str, Any] | None = None, short: bool = False) -> str:
    """e.g. ``"int8 U8S8 per-channel minmax"``, ``"int8-dynamic per-tensor"``, ``"w8a16 per-channel"``, ``"fp16"``.

    Signedness is activation then weight (U8S8 = unsigned 8-bit activations, signed 8-bit weights), shown only
    for static integer activations; granularity for every integer precision; the calibration method where one
    was used. ``short`` abbreviates the granularity ("per-ch"/"per-t") for narrow terminals.
    """
    precision = str(rec.get("precision") or "")
    if not precision:
        return ""
    parts = [precision]
    bits = _bits(precision)
    if bits is not None:
        signed = activation_signed(rec, profile)
        if signed is not None:
            parts.append(f"{'S' if signed else 'U'}{bits[1]}S{bits[0]}")
    integer = precision.startswith("int") or bool(_WA.match(precision))
    per_channel = rec.get("per_channel")
    if integer and isinstance(per_channel, bool):
        parts.append(("per-ch" if per_channel else "per-t") if short else
                     ("per-channel" if per_channel else "per-tensor"))
    calib = rec.get("calibration_method")
    if integer and isinstance(calib, str) and calib:
        parts.append(calib)
    return " ".join(parts)


def short_label(label: str) -> str:
    """A precision label for narrow terminals: the granularity abbreviated ("per-channel" -> "per-ch")."""
    return label.replace("per-channel", "per-ch").replace("per-tensor", "per-t")


def timing_origin(rec: Mapping[str, Any]) -> str | None:
    """"device", "stand-in", "simulated" or "estimated" for a job with a timing; None when nothing was timed."""
    if rec.get("latency_kind") == "estimated":
        return "estimated"
    if rec.get("simulated") is True:
        return "simulated"
    measured_on = rec.get("measured_on")
    if isinstance(measured_on, str) and measured_on:
        if "simulator" in measured_on or "emulation" in measured_on:
            return "simulated"
        return "device" if measured_on == rec.get("device") else "stand-in"
    return "device" if rec.get("status") == "ok" and _present(rec.get("fps")) else None


def is_untuned(rec: Mapping[str, Any]) -> bool:
    """True when the timing is of untuned code (TVM without MetaSchedule trials): not the device's best speed."""
    extra = rec.get("extra") or {}
    notes = " ".join(str(n) for n in (rec.get("timing_note"), extra.get("tuning_note"), extra.get("timing_note"))
                     if n)
    if "untuned" in notes.lower():
        return True
    trials = extra.get("tuning_trials")
    return str(rec.get("backend") or "").startswith("tvm") and isinstance(trials, (int, float)) and trials == 0


def timing_label(rec: Mapping[str, Any]) -> str:
    """Short words for the timing column: "" (device, tuned), "stand-in", "simulated", "+ untuned"."""
    origin = timing_origin(rec)
    words = [] if origin in (None, "device") else [origin]
    if is_untuned(rec):
        words.append("untuned")
    return ", ".join(words)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and value != value)


def throughput_point(rec: Mapping[str, Any]) -> str:
    """Where an offline run's best throughput was reached: "batch 8 × 2 streams" as "8×2" ("" when the record
    has no throughput: a single-stream run)."""
    batch, streams = rec.get("throughput_batch"), rec.get("throughput_streams")
    if not _present(batch):
        return ""
    return f"{int(batch)}×{int(streams) if _present(streams) else 1}"


def _first_present(rec: Mapping[str, Any], keys: tuple[str, ...]) -> float | None:
    return next((rec[k] for k in keys if _present(rec.get(k))), None)


#: The primary output's share of images deciding as FP32 does, by role: top-1 (classifier), decoded sequence.
AGREEMENT_FIELDS = ("top1_agreement", "sequence_agreement")
#: The primary output's MSE against FP32, by role: logits, probabilities, else element-wise in its own units².
MSE_FIELDS = ("logit_mse", "probability_mse", "output_mse")


def agreement(rec: Mapping[str, Any]) -> float | None:
    """Share of images whose decision equals the FP32 reference's (the ``agree %`` column of every view)."""
    return _first_present(rec, AGREEMENT_FIELDS)


def primary_mse(rec: Mapping[str, Any]) -> float | None:
    """The primary output's MSE against FP32 (the ``MSE`` column of every view)."""
    return _first_present(rec, MSE_FIELDS)


__all__ = ["AGREEMENT_FIELDS", "MSE_FIELDS", "ORIGIN_LABELS", "TIMING_ORIGINS", "activation_signed", "agreement",
           "is_untuned", "precision_label", "primary_mse", "short_label", "throughput_point", "timing_label",
           "timing_origin"]

