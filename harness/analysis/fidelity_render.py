"""Rendering of the cross-backend fidelity report: CSV, Markdown and rich tables (harness.analysis.fidelity
builds the report; this module only writes it)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

from harness.analysis.fidelity_tables import METRICS, ROW_FIELDS, FidelityReport, closing_note

def _fmt(v: Any, key: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if key in ("top1", "top5", "top1_agreement") or key.startswith(("top1_", "top5_")) and "mse" not in key:
            return f"{100.0 * v:.2f}"
        if "snr" in key:
            return f"{v:.2f}"
        return f"{v:.5g}"
    return str(v)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> Path:
    fields = list(fields or (rows[0].keys() if rows else []))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _md_table(rows: Sequence[dict[str, Any]], cols: Sequence[str], headers: Sequence[str] | None = None) -> str:
    headers = list(headers or cols)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c), c) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


MAIN_COLS = ("device", "backend", "precision", "kind", "status", *METRICS, "calibration_method",
             "calibration_samples_used", "fp32_island_ops", "npu_op_share", "fallback_ops")
MAIN_HEADERS = ("device", "backend", "precision", "kind", "status", "top-1 %", "top-5 %", "agree %", "logit MSE",
                "SNR dB", "ECE", "Brier", "calibration", "calib n", "FP32 islands", "NPU op share", "CPU fallback ops")
SPREAD_COLS = ("checkpoint", "scope", "deployments", "top1_min", "top1_max", "top1_range", "top1_std", "logit_mse_min",
               "logit_mse_max", "logit_mse_range", "logit_mse_std", "logit_mse_mean")


def markdown(report: FidelityReport) -> str:
    parts = ["# Cross-backend fidelity report", "",
             "Metrics against each checkpoint's FP32 ONNX Runtime reference on the same images. Rows of kind "
             "`emulated` are the device's quantization policy emulated on the host CPU (fidelity only, no latency "
             "or power claim); `simulator` rows come from a vendor simulator. Top-1/top-5/agreement in %.", ""]
    for ckpt in dict.fromkeys(r["checkpoint"] for r in report.rows):
        parts += [f"## {ckpt}", "", _md_table([r for r in report.rows if r["checkpoint"] == ckpt], MAIN_COLS,
                                                MAIN_HEADERS), ""]
    parts += ["## Cross-backend spread", "", "Over the ok rows of each scope: `low-precision` = every non-FP32 "
              "deployment, `integer` = INT8/WxAy deployments only; rows that ran identical numerics (one policy "
              "emulated for several devices) count once. Top-1 figures in %.", "",
              _md_table(report.spread, SPREAD_COLS), ""]
    if report.comparison:
        cols = ["device", "backend", "precision", "calibration_method", "kind"]
        heads = ["device", "backend", "precision", "calibration", "kind"]
        for m in ("top1", "logit_mse", "ece", "brier"):
            cols += [f"{m}_first", f"{m}_second", f"{m}_diff"]
            heads += [f"{m} {report.first}", f"{m} {report.second}", "diff"]
        cols.append("logit_mse_change_pct")
        heads.append("MSE change %")
        parts += [f"## {report.second} vs {report.first} (diff = {report.second} − {report.first})", "",
                  _md_table(report.comparison, cols, heads), ""]
    parts += ["## Closing note", "", closing_note(report), "", closing_note(report, "integer"), ""]
    policies = policy_rows(sorted({r["device"] for r in report.rows if r["kind"] == "emulated"}))
    if policies:
        parts += ["## Emulated policies", "", _md_table(policies, POLICY_COLS), ""]
    if report.notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(parts)


POLICY_COLS = ("device", "policy", "weights", "granularity", "activations", "calibration", "calib n",
               "fallback ops", "source")


def policy_rows(device_names: Sequence[str]) -> list[dict[str, Any]]:
    """What each emulated device's policies say (for the report's readers)."""
    from devices.loader import load_device

    rows = []
    for name in device_names:
        try:
            device = load_device(name)
        except (KeyError, ValueError):
            continue
        for p in device.quant_policies:
            rows.append({
                "device": name, "policy": p.name,
                "weights": p.weight_float if p.weight_float else f"int{p.weight_bits}",
                "granularity": p.weight_granularity if not p.weight_float else "-",
                "activations": p.activation + (" symmetric" if p.activation_symmetric and
                                               p.activation in ("int8", "uint8", "int16") else ""),
                "calibration": p.calibration_method + (f" {p.percentile}" if p.percentile else ""),
                "calib n": p.calibration_samples if p.calibration_method != "none" else "-",
                "fallback ops": ",".join(p.fallback_ops) or "-", "source": p.source,
            })
    return rows


def write_outputs(report: FidelityReport, out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [_write_csv(out / "fidelity.csv", report.rows, ROW_FIELDS),
             _write_csv(out / "spread.csv", report.spread, SPREAD_COLS)]
    if report.comparison:
        files.append(_write_csv(out / "comparison.csv", report.comparison))
    md = out / "fidelity.md"
    md.write_text(markdown(report))
    files.append(md)
    return files
