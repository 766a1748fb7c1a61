"""`compare` in the terminal: rich tables that fit the console width (csv/md/json stay in analysis.compare).

The main table shows ok rows by default (``--all`` for every row) with short checkpoint labels and a legend,
units in the headers, fixed significant digits, the timing origin (stand-in / simulated / untuned) as a
column and long notes as numbered footnotes. The Quant-Trim − MAP table shows each delta with its bootstrap
confidence interval (or why there is none); the cost table says how many stand-in jobs it left out.
"""
from __future__ import annotations

import math
from string import ascii_uppercase
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape

from harness.analysis.compare import NOTE_SEPARATOR, TABLE_TITLES
from harness.cli.textview import Column, Footnotes, fit_table, pct, sig
from harness.store.labels import AGREEMENT_FIELDS, MSE_FIELDS, agreement, primary_mse, short_label, throughput_point

#: Metrics that are fractions: shown in percent (deltas in percentage points).
FRACTIONS = frozenset({"top1", "top5", "top1_agreement", "miou"})


def _get(row: Any, key: str) -> Any:
    value = row.get(key) if isinstance(row, dict) else getattr(row, key, None)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _letters(names: list[str]) -> dict[str, str]:
    uniq = list(dict.fromkeys(n for n in names if n))
    return {n: (ascii_uppercase[i] if i < 26 else f"C{i}") for i, n in enumerate(uniq)}


def _origin(row: dict[str, Any]) -> str:
    words = [] if _get(row, "timing_origin") in (None, "device") else [str(row["timing_origin"])]
    if _get(row, "untuned") is True:
        words.append("untuned")
    return ", ".join(words)


def main_table(console: Console, df: pd.DataFrame, show_all: bool) -> None:
    rows = df.to_dict("records")
    hidden = [r for r in rows if r.get("status") != "ok"] if not show_all else []
    rows = [r for r in rows if show_all or r.get("status") == "ok"]
    letters = _letters([str(r.get("checkpoint_name") or "") for r in rows])
    notes = Footnotes()
    devices = {r.get("device") for r in rows}
    cols = [
        Column("ck", lambda r: letters.get(str(r.get("checkpoint_name") or ""), ""), 9, numeric=False),
        Column("device", lambda r: str(r.get("device") or ""), 8 if len(devices) > 1 else 1, numeric=False),
        Column("backend", lambda r: str(r.get("backend") or ""), 9, numeric=False),
        Column("precision", lambda r: short_label(str(_get(r, "precision_label") or r.get("precision") or "")), 9,
               numeric=False, min_width=13),
        Column("status", lambda r: str(r.get("status")), 9 if show_all else 0, numeric=False),
        # only when something is to be marked: an empty column would push the labels onto more lines
        Column("timing", _origin, 9 if any(_origin(r) for r in rows) else 0, numeric=False),
        Column("p50 ms", lambda r: sig(_get(r, "latency_ms_p50")), 7),
        Column("p99 ms", lambda r: sig(_get(r, "latency_ms_p99")), 3),
        Column("FPS", lambda r: sig(_get(r, "fps")), 9),
        # the offline scenario's best throughput and the batch×streams that gave it (offline runs only)
        Column("samples/s", lambda r: sig(_get(r, "throughput_samples_per_s")), 8),
        Column("b×streams", throughput_point, 7, numeric=False),
        Column("W", lambda r: sig(_get(r, "power_avg_w")) or ("n/a" if r.get("status") == "ok" else ""),
               5 if any(_get(r, "power_avg_w") is not None for r in rows) else 4),  # all n/a: a note says why
        Column("mJ/inf", lambda r: sig(_get(r, "energy_per_inference_mj")), 2),
        Column("top-1 %", lambda r: pct(_get(r, "top1")), 8),
        Column("agree %", lambda r: pct(agreement(r)), 6),
        Column("MSE", lambda r: sig(primary_mse(r), 2), 4),
        Column("SNR dB", lambda r: sig(_get(r, "snr_db")), 2),
        Column("ECE", lambda r: sig(_get(r, "ece"), 2), 1),
        Column("mIoU %", lambda r: pct(_get(r, "miou")), 4),
        Column("notes", lambda r: notes.refs(str(_get(r, "note") or "").split(NOTE_SEPARATOR)), 9, numeric=False),
    ]
    # leave out metric columns nothing measured (a classification run has no mIoU)
    measured = {c: df[c].notna().any() if c in df.columns else False for c in
                ("latency_ms_p99", "energy_per_inference_mj", "top1", "snr_db", "ece", "miou",
                 "throughput_samples_per_s") + AGREEMENT_FIELDS + MSE_FIELDS}
    measured["agreement"] = any(measured[c] for c in AGREEMENT_FIELDS)
    measured["mse"] = any(measured[c] for c in MSE_FIELDS)
    keys = {"p99 ms": "latency_ms_p99", "mJ/inf": "energy_per_inference_mj", "top-1 %": "top1",
            "samples/s": "throughput_samples_per_s", "b×streams": "throughput_samples_per_s",
            "agree %": "agreement", "MSE": "mse", "SNR dB": "snr_db", "ECE": "ece", "mIoU %": "miou"}
    cols = [c for c in cols if c.priority > 0 and (c.header not in keys or measured[keys[c.header]])]
    title = TABLE_TITLES["main"] + (f" on {next(iter(devices))}" if len(devices) == 1 else "")
    if rows:
        table, _ = fit_table(rows, cols, console.width, title=title)
        console.print(table)
    else:
        console.print(f"[bold]{escape(title)}[/]: no ok rows")
    for name, letter in letters.items():
        console.print(f"{letter} = {escape(name)}")
    for line in notes.lines():
        console.print(escape(line))
    if hidden:
        counts = pd.Series([r.get("status") for r in hidden]).value_counts()
        console.print(f"{len(hidden)} row(s) not ok hidden ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
                      "--all shows them with their reasons")


def _delta_text(row: dict[str, Any]) -> str:
    d = _get(row, "delta")
    if d is None:
        return ""
    return f"{100 * d:+.2f} pt" if row.get("metric") in FRACTIONS else sig(d) if d < 0 else "+" + sig(d)


def _ci_text(row: dict[str, Any], notes: Footnotes) -> str:
    lo, hi = _get(row, "delta_ci_low"), _get(row, "delta_ci_high")
    if lo is not None and hi is not None:
        return f"[{100 * lo:+.2f}, {100 * hi:+.2f}]" if row.get("metric") in FRACTIONS else f"[{sig(lo)}, {sig(hi)}]"
    n = notes.add(_get(row, "ci_note"))
    return f"see {n}" if n else ""


def deltas_table(console: Console, df: pd.DataFrame) -> None:
    rows = df.to_dict("records")
    notes = Footnotes()
    value = lambda key: (lambda r: pct(_get(r, key), 2) if r.get("metric") in FRACTIONS else sig(_get(r, key)))  # noqa: E731
    cols = [
        Column("model", lambda r: str(r.get("model") or ""), 6, numeric=False),
        Column("device", lambda r: str(r.get("device") or ""), 8, numeric=False),
        Column("backend", lambda r: str(r.get("backend") or ""), 9, numeric=False),
        Column("precision", lambda r: " ".join(str(x) for x in (r.get("precision"), _get(r, "calibration_method"))
                                               if x), 9, numeric=False),
        Column("metric", lambda r: str(r.get("metric")) + (" %" if r.get("metric") in FRACTIONS else ""), 9,
               numeric=False),
        Column("MAP", value("map"), 7),
        Column("Quant-Trim", value("quanttrim"), 7),
        Column("QT − MAP", _delta_text, 9),
        Column("95% CI", lambda r: _ci_text(r, notes), 8, numeric=False),
        Column("n", lambda r: f"{r.get('n_map')}/{r.get('n_quanttrim')}", 3),
    ]
    if not rows:
        console.print(f"[bold]{escape(TABLE_TITLES['deltas'])}[/]: no MAP/Quant-Trim pair of ok jobs")
        return
    table, _ = fit_table(rows, cols, console.width, title=TABLE_TITLES["deltas"])
    console.print(table)
    console.print("pt = percentage points; 95% CI: paired bootstrap over evaluation images (scipy.stats.bootstrap);"
                  " n = MAP/Quant-Trim jobs")
    for line in notes.lines():
        console.print(escape(line))


def cost_view(console: Console, df: pd.DataFrame) -> None:
    rows = df.to_dict("records")
    cols = [
        Column("device", lambda r: str(r.get("device") or ""), 9, numeric=False),
        Column("backend", lambda r: str(r.get("backend") or ""), 9, numeric=False),
        Column("precision", lambda r: str(r.get("precision") or ""), 9, numeric=False),
        Column("model", lambda r: str(r.get("model") or ""), 5, numeric=False),
        Column("timing", _origin, 9 if "timing_origin" in df.columns else 0, numeric=False),
        Column("price €", lambda r: sig(_get(r, "price_eur")), 7),
        Column("FPS", lambda r: sig(_get(r, "fps")), 9),
        Column("W avg", lambda r: sig(_get(r, "power_avg_w")) or "n/a", 8),
        Column("FPS/W", lambda r: sig(_get(r, "fps_per_w")), 8),
        Column("mJ/inf", lambda r: sig(_get(r, "energy_per_inference_mj")), 6),
        Column("€/FPS", lambda r: sig(_get(r, "price_eur_per_fps")), 8),
        Column("W/€", lambda r: sig(_get(r, "w_per_eur")), 4),
        Column("est.", lambda r: "yes" if r.get("power_estimated") else "", 5, numeric=False),
    ]
    if rows:
        table, _ = fit_table(rows, [c for c in cols if c.priority > 0], console.width, title=TABLE_TITLES["cost"])
        console.print(table)
    else:
        console.print(f"[bold]{escape(TABLE_TITLES['cost'])}[/]: no ok job timed on its own device")
    excluded = int(df.attrs.get("excluded_stand_ins") or 0)
    if excluded:
        console.print(f"{excluded} job(s) timed on a stand-in host or a simulator left out: their speed is not the "
                      "device's (--include-stand-ins shows them, marked)")


def print_tables(console: Console, tables: dict[str, pd.DataFrame], show_all: bool) -> None:
    """Every table of ``tables`` (main, deltas, cost) on ``console``, fitted to its width."""
    for i, (name, df) in enumerate(tables.items()):
        if i:
            console.print()
        if name == "main":
            main_table(console, df, show_all)
        elif name == "deltas":
            deltas_table(console, df)
        elif name == "cost":
            cost_view(console, df)


__all__ = ["print_tables"]
