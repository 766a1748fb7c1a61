"""The cross-backend fidelity report as data: one row per job, the spread across deployments, the two checkpoints
side by side (pure functions over records; harness.analysis.fidelity runs the jobs, fidelity_render writes)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from devices.numerics import is_integer_precision

METRICS = ("top1", "top5", "top1_agreement", "logit_mse", "snr_db", "ece", "brier")
#: Lower is better for these (the comparison's "better" column uses it).
LOWER_IS_BETTER = ("logit_mse", "ece", "brier")
ROW_FIELDS = ("checkpoint", "device", "backend", "precision", "weight_granularity", "kind", "status",
              "calibration_method", "calibration_samples_used", *METRICS, "fp32_island_ops", "npu_op_share", "fallback_ops", "note")


@dataclass
class FidelityReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    spread: list[dict[str, Any]] = field(default_factory=list)
    comparison: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    first: str = ""                   # the checkpoint compared against (MAP when recognised)
    second: str = ""                  # the checkpoint compared (Quant-Trim when recognised)


def record_row(kind: str, rec: Any) -> dict[str, Any]:
    """One table row from a JobRecord (emulated rows say so in `kind`)."""
    extra = dict(rec.extra or {})
    simulated = bool(rec.simulated) or rec.backend == "emulated"
    row = {
        "checkpoint": rec.checkpoint, "device": rec.device, "backend": rec.backend, "precision": rec.precision,
        "weight_granularity": applied_weight_granularity(rec, extra),
        "kind": "emulated" if rec.backend == "emulated" else ("simulator" if simulated else kind),
        "status": rec.status, "calibration_method": rec.calibration_method,
        "calibration_samples_used": extra.get("calibration_samples_used", rec.calibration_samples),
        "fp32_island_ops": ",".join(extra.get("fp32_island_ops", []) or []),
        # Operator coverage of vendor NPU toolchains (backends.onnx_graph.op_coverage): share on the NPU, fallbacks.
        "npu_op_share": extra.get("npu_op_share"),
        "fallback_ops": ",".join(extra.get("fallback_ops", []) or []),
        "note": "" if rec.status == "ok" else (rec.error_message or "")[:200],
    }
    for m in METRICS:
        v = getattr(rec, m, None)
        row[m] = float(v) if isinstance(v, (int, float)) else (float("inf") if v == "inf" else None)
    row["numerics_key"] = _numerics_key(rec, extra)
    return row


def applied_weight_granularity(rec: Any, extra: dict[str, Any]) -> str:
    """The integer-weight granularity the job really deployed: an emulated device policy applies its own (a
    ``--per-channel``/``--per-tensor`` request does not change it; the record says ``request_not_applied``), a real
    backend applies the request. Empty for floating-point precisions (no integer weights)."""
    if not is_integer_precision(rec.precision):
        return ""
    policy = extra.get("policy")
    if rec.backend == "emulated" and isinstance(policy, dict) and policy.get("weight_granularity"):
        return str(policy["weight_granularity"])
    if extra.get("weight_granularity"):
        return str(extra["weight_granularity"])
    if rec.per_channel is None:
        return ""
    return "per_channel" if rec.per_channel else "per_tensor"


def _numerics_key(rec: Any, extra: dict[str, Any]) -> str:
    """Rows with the same key ran the same numerics (e.g. one TensorRT policy emulated for three devices)."""
    import json

    policy = extra.get("policy")
    if rec.backend != "emulated" or not isinstance(policy, dict):
        return f"{rec.checkpoint}|{rec.device}|{rec.backend}|{rec.precision}|{rec.calibration_method}"
    numerics = {k: v for k, v in policy.items() if k not in ("name", "source", "calibration_samples")}
    return "|".join([rec.checkpoint, "emulated", json.dumps(numerics, sort_keys=True),
                     str(extra.get("calibration_samples_used")), str(rec.calibration_method)])


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


SPREAD_SCOPES = {
    "low-precision": lambda r: r["precision"] != "fp32",
    "integer": lambda r: is_integer_precision(r["precision"]),
}


def spread_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per checkpoint and scope: max−min and std (population) of top-1 and logit MSE over its ok rows.

    Scopes: ``low-precision`` (every non-FP32 deployment) and ``integer`` (INT8/WxAy deployments only).
    """
    out = []
    for scope, keep in SPREAD_SCOPES.items():
        out += _spread(rows, scope, keep)
    return out


def _spread(rows: Sequence[dict[str, Any]], scope: str, keep: Any) -> list[dict[str, Any]]:
    out = []
    for ckpt in dict.fromkeys(r["checkpoint"] for r in rows):
        sel = [r for r in rows if r["checkpoint"] == ckpt and r["status"] == "ok" and keep(r)]
        # Identical numerics (the same policy emulated for several devices) count once.
        sel = list({r.get("numerics_key", id(r)): r for r in sel}.values())
        top1 = _finite(r["top1"] for r in sel)
        mse = _finite(r["logit_mse"] for r in sel)
        out.append({
            "checkpoint": ckpt, "scope": scope, "deployments": len(sel),
            "top1_min": min(top1) if top1 else None, "top1_max": max(top1) if top1 else None,
            "top1_range": (max(top1) - min(top1)) if top1 else None,
            "top1_std": _std(top1),
            "logit_mse_min": min(mse) if mse else None, "logit_mse_max": max(mse) if mse else None,
            "logit_mse_range": (max(mse) - min(mse)) if mse else None,
            "logit_mse_std": _std(mse),
            "logit_mse_mean": float(np.mean(mse)) if mse else None,
        })
    return out


def _std(values: Sequence[float]) -> float | None:
    """Population standard deviation; float noise on equal values (1e-17) reads as 0."""
    if not values:
        return None
    sd = float(np.std(values))
    return 0.0 if sd <= 1e-12 * max(1.0, max(abs(v) for v in values)) else sd


def pick_pair(names: Sequence[str]) -> tuple[str, str]:
    """(baseline, candidate): MAP and Quant-Trim when the names say so, else the first two in order."""
    names = list(dict.fromkeys(names))
    if len(names) < 2:
        return (names[0], "") if names else ("", "")
    base = next((n for n in names if "map" in n.lower()), None)
    cand = next((n for n in names if "quanttrim" in n.lower().replace("-", "").replace("_", "")), None)
    if base and cand and base != cand:
        return base, cand
    return names[0], names[1]


def comparison_table(rows: Sequence[dict[str, Any]], first: str, second: str) -> list[dict[str, Any]]:
    """Rows keyed by device/backend/precision with both checkpoints' metrics and second − first."""
    key = lambda r: (r["device"], r["backend"], r["precision"], r["calibration_method"])  # noqa: E731
    a = {key(r): r for r in rows if r["checkpoint"] == first and r["status"] == "ok"}
    b = {key(r): r for r in rows if r["checkpoint"] == second and r["status"] == "ok"}
    out = []
    for k in [k for k in a if k in b]:
        row: dict[str, Any] = {"device": k[0], "backend": k[1], "precision": k[2], "calibration_method": k[3],
                               "kind": a[k]["kind"]}
        for m in ("top1", "top1_agreement", "logit_mse", "snr_db", "ece", "brier"):
            va, vb = a[k][m], b[k][m]
            row[f"{m}_first"], row[f"{m}_second"] = va, vb
            row[f"{m}_diff"] = (vb - va) if _finite([va, vb]) and len(_finite([va, vb])) == 2 else None
        va, vb = a[k]["logit_mse"], b[k]["logit_mse"]
        row["logit_mse_change_pct"] = (100.0 * (vb - va) / va) if _finite([va, vb]) and len(_finite([va, vb])) == 2 \
            and va else None
        out.append(row)
    return out


def build_report(records: Sequence[tuple[str, Any]], checkpoint_order: Sequence[str] = ()) -> FidelityReport:
    rows = [record_row(kind, rec) for kind, rec in records]
    rows.sort(key=lambda r: (r["checkpoint"], r["device"], r["backend"], r["precision"]))
    report = FidelityReport(rows=rows, spread=spread_table(rows))
    names = [r["checkpoint"] for r in rows]
    first, second = pick_pair(names)
    report.first, report.second = first, second
    if second:
        report.comparison = comparison_table(rows, first, second)
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        report.notes.append(f"{len(failed)} job(s) did not produce metrics (status in the tables/CSV)")
    return report


def closing_note(report: FidelityReport, scope: str = "low-precision") -> str:
    """One paragraph quoting the cross-backend spread of both checkpoints and its change."""
    s = {r["checkpoint"]: r for r in report.spread if r["scope"] == scope}
    if not report.second or report.first not in s or report.second not in s:
        parts = [f"{c}: top-1 range {_pts(r['top1_range'])} pts (std {_pts(r['top1_std'])}), logit-MSE range "
                 f"{_num(r['logit_mse_range'])} (std {_num(r['logit_mse_std'])}) over {r['deployments']} deployments"
                 for c, r in s.items()]
        return f"Cross-backend spread ({scope}): " + "; ".join(parts) + "."
    a, b = s[report.first], s[report.second]

    def change(x: Any, y: Any) -> str:
        if x is None or y is None or not x:
            return "n/a"
        return f"{100.0 * (y - x) / x:+.0f}%"

    return (
        f"Cross-backend spread over {b['deployments']} {scope} deployments: {report.second} top-1 range "
        f"{_pts(b['top1_range'])} pts (std {_pts(b['top1_std'])}) vs {report.first} {_pts(a['top1_range'])} pts "
        f"(std {_pts(a['top1_std'])}), {change(a['top1_range'], b['top1_range'])}; logit-MSE range "
        f"{_num(b['logit_mse_range'])} (std {_num(b['logit_mse_std'])}) vs {_num(a['logit_mse_range'])} "
        f"(std {_num(a['logit_mse_std'])}), {change(a['logit_mse_range'], b['logit_mse_range'])}; mean logit MSE "
        f"{_num(b['logit_mse_mean'])} vs {_num(a['logit_mse_mean'])} ({change(a['logit_mse_mean'], b['logit_mse_mean'])})."
    )


def _pts(v: Any) -> str:
    return "n/a" if v is None else f"{100.0 * v:.2f}"


def _num(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.4g}" if math.isfinite(v) else str(v))
