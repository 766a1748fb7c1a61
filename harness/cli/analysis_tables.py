"""Terminal tables of the fidelity, per-layer and calibration-sensitivity analyses (rich lives in the CLI layer;
harness.analysis computes, this module only draws)."""
from __future__ import annotations

from rich.table import Table

from harness.analysis.calib_sensitivity import CalibStudy
from harness.analysis.fidelity_render import MAIN_COLS, MAIN_HEADERS, SPREAD_COLS, _fmt
from harness.analysis.fidelity_tables import FidelityReport
from harness.analysis.layerwise import LayerReport


def fidelity_tables(report: FidelityReport) -> list[Table]:
    tables = []
    for ckpt in dict.fromkeys(r["checkpoint"] for r in report.rows):
        t = Table(title=f"Fidelity vs FP32 reference: {ckpt}")
        for h in MAIN_HEADERS:
            t.add_column(h, justify="left" if h in ("device", "backend", "precision", "kind", "status",
                                                    "calibration", "FP32 islands") else "right")
        for r in report.rows:
            if r["checkpoint"] == ckpt:
                t.add_row(*[_fmt(r.get(c), c) for c in MAIN_COLS])
        tables.append(t)
    t = Table(title="Cross-backend spread (top-1 in %)")
    for c in SPREAD_COLS:
        t.add_column(c, justify="left" if c == "checkpoint" else "right")
    for r in report.spread:
        t.add_row(*[_fmt(r.get(c), c) for c in SPREAD_COLS])
    tables.append(t)
    if report.comparison:
        t = Table(title=f"{report.second} vs {report.first} (diff = second − first)")
        cols = ("device", "backend", "precision", "calibration_method", "top1_first", "top1_second", "top1_diff", "logit_mse_first",
                "logit_mse_second", "logit_mse_change_pct", "ece_diff", "brier_diff")
        for c in cols:
            t.add_column(c, justify="left" if c in ("device", "backend", "precision", "calibration_method")
                         else "right")
        for r in report.comparison:
            t.add_row(*[_fmt(r.get(c), c) for c in cols])
        tables.append(t)
    return tables


def layers_table(report: LayerReport, top: int | None = 20) -> Table:
    """A rich Table of the worst layers."""
    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else ("inf" if v == float("inf") else format(v, fmt))

    t = Table(title=f"Per-layer fidelity: {report.checkpoint} on {report.device} / {report.backend} / "
                    f"{report.precision} ({report.n_inputs} inputs, worst first)")
    for col in ("#", "tensor", "op", "single SNR dB", "single cos", "entire SNR dB", "entire cos", "act range",
                "weight range", "w max/p99"):
        t.add_column(col, justify="left" if col in ("tensor", "op") else "right")
    for i, r in enumerate(report.rows[:top] if top else report.rows, 1):
        act = "-" if r.act_min is None else f"[{r.act_min:.3g}, {r.act_max:.3g}]"
        wr = "-" if r.weight_min is None else f"[{r.weight_min:.3g}, {r.weight_max:.3g}]"
        t.add_row(str(i), r.tensor, r.op_type, f(r.single_snr_db, ".1f"), f(r.single_cosine, ".5f"),
                  f(r.snr_db, ".1f"), f(r.cosine, ".5f"), act, wr, f(r.weight_outlier_ratio, ".2f"))
    return t


def calib_table(study: CalibStudy) -> Table:
    fields = sorted({s["mse_field"] for s in study.summary}) or ["logit_mse"]
    t = Table(title=f"Calibration-set sensitivity ({' / '.join(fields)} vs FP32; spread across calibration sets)")
    for c in ("checkpoint", "sets", "MSE min", "MSE max", "max/min", "CV", "top-1 range pts"):
        t.add_column(c, justify="left" if c == "checkpoint" else "right")
    for s in study.summary:
        f = s["mse_field"]
        t.add_row(s["checkpoint"], str(s["calibration_sets"]), f"{s[f + '_min']:.5g}", f"{s[f + '_max']:.5g}",
                  f"{s[f + '_max_over_min']:.3f}", f"{s[f + '_cv']:.3f}", f"{100 * s['top1_range']:.2f}")
    return t
