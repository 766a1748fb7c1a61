"""One self-contained HTML report: environment, tables and figures (images embedded, no network, no scripts)."""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from harness.analysis.compare import NOTE_SEPARATOR, TABLE_TITLES, build_tables, format_value
from harness.analysis.headline import Headline, build_headline
from harness.store.labels import ORIGIN_LABELS
from harness.store.reader import ResultStore

#: The report's main table leads with what a reader decides on (throughput and fidelity), so both are on the
#: first screen at 1400 px; every other column follows (`compare --format csv` has them all).
LEAD_COLUMNS = ("checkpoint_name", "device", "backend", "precision_label", "status", "timing_origin", "fps",
                "throughput_samples_per_s", "throughput_batch", "throughput_streams", "top1", "top1_agreement",
                "logit_mse", "snr_db", "ece", "latency_ms_p50", "latency_ms_p99", "power_avg_w",
                "energy_per_inference_mj", "note")
#: Shorter headers with units for the report's tables.
HEADERS = {"checkpoint_name": "checkpoint", "precision_label": "precision", "timing_origin": "timed on",
           "fps": "FPS", "throughput_samples_per_s": "offline samples/s", "throughput_batch": "at batch",
           "throughput_streams": "streams", "throughput_mode": "throughput mode", "top1": "top-1",
           "top1_agreement": "agreement", "logit_mse": "logit MSE",
           "snr_db": "SNR dB", "ece": "ECE", "latency_ms_p50": "p50 ms", "latency_ms_p99": "p99 ms",
           "power_avg_w": "power W", "energy_per_inference_mj": "mJ/inf"}

PLOT_TITLES = {
    "power-throughput": "Power vs throughput (paper Fig. 3 encoding)",
    "accuracy-throughput": "Fidelity vs throughput",
    "latency": "Latency distributions per backend",
    "training": "Training dynamics",
    "distributions": "Weight and activation distributions (MAP vs Quant-Trim)",
}
PLOT_CAPTIONS = {
    "power-throughput": "x: median FPS; y: average peak power; whiskers: 5th-95th percentile power. Colour = device, "
                        "marker = precision, filled = the device's default runtime, unfilled = another runtime. "
                        "Estimated power is faded with dashed whiskers; jobs without power are named, not drawn.",
    "accuracy-throughput": "Arrows go from the MAP checkpoint to the Quant-Trim checkpoint of the same job, labelled "
                           "with the difference and its 95% bootstrap CI over evaluation images where per-image data "
                           "exists. Error bars: 95% Wilson interval of each point over its evaluation images. A "
                           "fraction axis never spans less than 5 points, so differences within noise look small. "
                           "Rings mark timings not taken on the device (stand-in host, simulator) or by untuned code.",
    "latency": "Boxes from the raw per-iteration timings (p25-p75, median, whiskers p1-p99), one per checkpoint "
               "(MAP and Quant-Trim never pooled); jobs without a raw file show their recorded percentiles. Hatched: "
               "timed on a stand-in host, in a simulator, or by untuned code.",
    "training": "Mean over seeds with a min-max band; dashed grey: the fake-quantization blend factor \u03bb.",
    "distributions": "Log-scale histograms per layer group; the legend of each panel gives max|x| / p99|x|.",
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1400px;
color:#222;padding:0 16px;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}h3{font-size:1.05em}
.meta{color:#666;font-size:.9em}
.scroll{overflow-x:auto;border:1px solid #e3e3e3;border-radius:4px;margin:.5em 0 1em}
table{border-collapse:collapse;font-size:12px;white-space:nowrap}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
th{background:#f5f5f5;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.na{background:#fafafa}
tr.status-failed td,tr.status-crashed td,tr.status-timeout td{color:#a33}
tr.status-unsupported td{color:#888}
figure{margin:1em 0 2em}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em;margin-top:.3em}
.skipped{color:#777;font-style:italic}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:13px}
dl.kv dt{color:#666}dl.kv dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
.warn{color:#8a5a00}
#headline{border:1px solid #cfd8e3;background:#f7fafd;border-radius:6px;padding:10px 16px;margin:.6em 0 1em}
#headline h2{margin:.1em 0 .4em;border:0;font-size:1.15em}
#headline table{font-size:13px;white-space:normal}
#headline ul{margin:.3em 0;padding-left:1.2em;font-size:13px}
td.note{white-space:nowrap;font-size:11px;color:#555}
ol.notes{font-size:12px;color:#555;margin:.2em 0 1em;padding-left:2.2em}
ol.notes li::marker{content:"[" counter(list-item) "] "}
tr.origin-stand-in td,tr.origin-simulated td{background:#fff8e6}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_table(df: pd.DataFrame, table_id: str, max_rows: int = 2000, headers: dict[str, str] | None = None) -> str:
    """A DataFrame as an HTML table: missing cells empty (class na), numbers right-aligned, status rows coloured,
    stand-in / simulated timings shaded."""
    if df.empty:
        return f'<p class="skipped" id="{_e(table_id)}-empty">(no rows)</p>'
    shown = df.head(max_rows)
    numeric = {c for c in df.columns if df[c].dtype.kind in "fiu"}
    headers = headers or {}
    head = "".join(f'<th data-col="{_e(c)}">{_e(headers.get(str(c), c))}</th>' for c in df.columns)
    body = []
    for rec in shown.to_dict("records"):
        cells = []
        for c in df.columns:
            text = format_value(rec[c], str(c))
            cls = "num" if c in numeric else "note" if c == "note" else ""
            if text == "":
                cls = (cls + " na").strip()
            cells.append(f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>")
        status, origin = rec.get("status"), rec.get("timing_origin")
        classes = ([f"status-{status}"] if isinstance(status, str) else []) + \
            ([f"origin-{origin}"] if origin in ("stand-in", "simulated") else [])
        row_cls = f' class="{_e(" ".join(classes))}"' if classes else ""
        body.append(f"<tr{row_cls}>" + "".join(cells) + "</tr>")
    more = (f'<p class="meta">{len(df) - max_rows} more rows not shown; use `python -m harness compare` for all.</p>'
            if len(df) > max_rows else "")
    return (f'<div class="scroll"><table id="{_e(table_id)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{more}')


def _kv(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_plain(v))}</dd>" for k, v in items if v not in (None, "", [], {}))
    return f'<dl class="kv">{rows}</dl>' if rows else ""


def _plain(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return str(v)


def environment_section(store: ResultStore) -> str:
    """Per run: command, host, package versions, device profiles, checkpoints, warnings (from the manifest)."""
    parts = []
    for run_dir, man in store.manifests.items():
        run_id = man.get("run_id") or Path(run_dir).name
        parts.append(f"<h3>Run {_e(run_id)}</h3>")
        if not man:
            parts.append(f'<p class="warn">{_e(run_dir)} has no manifest.json: environment unknown.</p>')
            continue
        cmd = man.get("command")
        parts.append(_kv([("directory", run_dir), ("command", " ".join(cmd) if isinstance(cmd, list) else cmd),
                          ("started at", man.get("started_at")), ("evaluation data", man.get("eval_source"))]))
        host = man.get("host") or {}
        if isinstance(host, dict) and host:
            parts.append("<h4>Host</h4>" + _kv(host.items()))
        pk = man.get("packages") or {}
        if isinstance(pk, dict) and pk:
            parts.append("<h4>Packages</h4>" + _kv(sorted(pk.items())))
        devices = man.get("devices") or {}
        if isinstance(devices, dict) and devices:
            rows = []
            present = man.get("device_present") or {}
            for name, prof in devices.items():
                if not isinstance(prof, dict):
                    continue
                rows.append({"device": name, "display_name": prof.get("display_name"),
                             "form_factor": prof.get("form_factor"),
                             "backends (default first)": ", ".join(prof.get("backends") or ()),
                             "precisions": ", ".join(prof.get("precisions") or ()),
                             "power_sources": ", ".join(prof.get("power_sources") or ()),
                             "price_eur": prof.get("price_eur"), "peak_tops": prof.get("peak_tops"),
                             "present": _plain(present.get(name)) if name in present else None})
            parts.append("<h4>Device profiles</h4>" + html_table(pd.DataFrame(rows), f"devices-{run_id}"))
        platform = man.get("platform") or {}
        if isinstance(platform, dict) and any(platform.values()):
            for name, facts in platform.items():
                if isinstance(facts, dict) and facts:
                    parts.append(f"<h4>Platform facts: {_e(name)}</h4>" + _kv(facts.items()))
        cps = man.get("checkpoints") or {}
        if isinstance(cps, dict) and cps:
            rows = [{"checkpoint": n, "sha256": (f or {}).get("sha256"), "path": (f or {}).get("path")}
                    for n, f in cps.items() if isinstance(f, dict)]
            parts.append("<h4>Checkpoints</h4>" + html_table(pd.DataFrame(rows), f"checkpoints-{run_id}"))
        warns = man.get("warnings") or []
        if warns:
            parts.append("<h4>Warnings</h4><ul>" + "".join(f'<li class="warn">{_e(w)}</li>' for w in warns) + "</ul>")
    if store.problems:
        parts.append("<h3>Problems reading the store</h3><ul>" +
                     "".join(f'<li class="warn">{_e(p)}</li>' for p in store.problems) + "</ul>")
    return "\n".join(parts)


def status_summary(df: pd.DataFrame) -> str:
    if df.empty:
        return '<p class="skipped">No records.</p>'
    counts = df.groupby("status").size().to_dict()
    text = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return f'<p id="status-summary">{len(df)} jobs: {_e(text)}.</p>'


def _pct(v: float) -> str:
    return f"{100 * v:+.2f} pt"


def headline_html(h: Headline) -> str:
    """The headline block: best configuration per device, Quant-Trim vs MAP, where timings came from, power."""
    rows = []
    for d in h.devices:
        if d.backend is None:
            rows.append(f"<tr><td>{_e(d.device)}</td><td colspan=4 class=\"skipped\">{_e(d.note)}</td></tr>")
            continue
        why = (f"stand-in: timed on {d.measured_on}, not on {d.device}" if d.origin == "stand-in" and d.measured_on
               else ORIGIN_LABELS.get(str(d.origin), str(d.origin)))
        origin = "" if d.origin == "device" else f' <span class="warn">({_e(why)})</span>'
        rows.append(f"<tr><td>{_e(d.device)}</td><td><b>{_e(d.backend)} {_e(d.precision_label)}</b>{origin}</td>"
                    f'<td class="num">{_e(format_value(d.fps))} FPS</td><td>{_e(d.fidelity or "")}</td>'
                    f'<td class="num">{d.candidates} within budget</td></tr>')
    best = ("<table><thead><tr><th>device</th><th>fastest within budget</th><th>throughput</th><th>fidelity</th>"
            f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>") if rows else ""
    items = []
    for r in h.recipes:
        name = {"top1_agreement": "top-1 agreement", "top1": "top-1", "logit_mse": "logit MSE",
                "snr_db": "output SNR"}.get(r.metric, r.metric)
        if r.metric == "logit_mse":
            span = f"median {r.median:+.0f} % (range {r.low:+.0f} to {r.high:+.0f} %)"
        elif r.metric == "snr_db":
            span = f"median {r.median:+.1f} dB (range {r.low:+.1f} to {r.high:+.1f} dB)"
        else:
            span = f"median {_pct(r.median)} (range {_pct(r.low)} to {_pct(r.high)})"
        ci = (f"; {r.ci_pairs} with a bootstrap CI in the table below" if r.ci_pairs else
              "; no per-image data for a CI" if r.metric in ("top1", "top1_agreement") else "")
        items.append(f"<li>Quant-Trim − MAP, {_e(name)}: {_e(span)} over {r.n_pairs} pair(s); Quant-Trim "
                     f"better in {r.n_wins} of {r.n_pairs} ({_e(r.better)} is better){_e(ci)}</li>")
    if not items:
        items.append("<li>Quant-Trim vs MAP: no pair of ok MAP and Quant-Trim jobs on the same configuration.</li>")
    o = h.origins
    timed = sum(o.values())
    items.append(f"<li>Timings: {o.get('device', 0)} of {timed} measured on the device, {o.get('stand-in', 0)} "
                 f"stood in for by another machine, {o.get('simulated', 0)} simulated"
                 + (f"; {h.untuned} untuned" if h.untuned else "") + " (stand-ins are shaded in the tables, ringed "
                 "in the figures and left out of the cost table).</li>")
    p = h.power
    power = (f"{p.get('measured', 0)} measured, {p.get('estimated', 0)} estimated, {p.get('none', 0)} without power"
             + (f" — {h.power_reason}" if h.power_reason and p.get("none") else ""))
    items.append(f"<li>Power: {_e(power)}.</li>")
    budget = f'<p class="meta">Fidelity budget: {_e(h.budget)}.</p>' if h.budget else ""
    return f'<section id="headline"><h2>Headline</h2>{best}{budget}<ul>{"".join(items)}</ul></section>'


def main_table_for_report(main: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The main table with throughput and fidelity first, ok rows before the others, and each long note replaced
    by its number in a list under the table (a note repeated on every row would make every row tall).

    Returns the table and the numbered notes (note i is "[i]" in the table).
    """
    if "untuned" in main.columns and "timing_origin" in main.columns:  # one column says where and how it was timed
        untuned = main["untuned"].map(lambda v: v is True)
        main = main.assign(timing_origin=[f"{o}, untuned" if u and isinstance(o, str) else o
                                          for o, u in zip(main["timing_origin"], untuned)]).drop(columns="untuned")
    lead = [c for c in LEAD_COLUMNS if c in main.columns]
    rest = [c for c in main.columns if c not in lead and c not in ("precision", "calibration_method", "model")]
    out = main[lead + rest]
    if "status" in out:
        out = out.assign(_o=out["status"].map(lambda s: 0 if s == "ok" else 1)).sort_values(
            "_o", kind="mergesort").drop(columns="_o")
    notes: list[str] = []
    if "note" in out:
        refs = []
        for text in out["note"]:
            parts = [p for p in str(text).split(NOTE_SEPARATOR) if p] if isinstance(text, str) else []
            nums = []
            for part in parts:
                if part not in notes:
                    notes.append(part)
                nums.append(notes.index(part) + 1)
            refs.append(" ".join(f"[{n}]" for n in nums) or None)
        out = out.assign(note=refs)
    return out.reset_index(drop=True), notes


def notes_html(notes: Sequence[str], list_id: str) -> str:
    if not notes:
        return ""
    return (f'<ol class="notes" id="{_e(list_id)}">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ol>")


def figure_png_base64(fig: Any, dpi: int = 110) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plots_section(store: ResultStore, kinds: Sequence[str], **plot_kwargs: Any) -> tuple[str, dict[str, str]]:
    """Every figure embedded as a base64 PNG; kinds with nothing to draw say why. Returns (html, skipped)."""
    from harness.analysis.figures import NoPlotData, build_figure

    parts, skipped = [], {}
    for kind in kinds:
        title = PLOT_TITLES.get(kind, kind)
        try:
            fig = build_figure(kind, store, **plot_kwargs)
        except NoPlotData as exc:
            skipped[kind] = str(exc)
            parts.append(f'<h3>{_e(title)}</h3><p class="skipped" id="skipped-{_e(kind)}">Not drawn: {_e(exc)}</p>')
            continue
        data = figure_png_base64(fig)
        parts.append(f'<figure id="fig-{_e(kind)}"><h3>{_e(title)}</h3>'
                     f'<img alt="{_e(title)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{_e(PLOT_CAPTIONS.get(kind, ''))}</figcaption></figure>")
    return "\n".join(parts), skipped


def outputs_section(df: pd.DataFrame) -> list[str]:
    """Every output scored by role, and the worst output channels (a dead class-score channel reads 0 dB)."""
    from harness.analysis.outputs import outputs_table, worst_channels_table

    per_output = outputs_table(df)
    if per_output.empty:
        return []
    return [f'<h2 id="outputs">{_e(TABLE_TITLES["outputs"])}</h2>', html_table(per_output, "table-outputs"),
            f'<h2 id="worst-channels">{_e(TABLE_TITLES["worst_channels"])}</h2>',
            '<p class="meta">SNR of each output channel (along the card\'s class axis) against the FP32 reference, '
            "lowest first; 0 dB means the channel carries as much error as signal (a zeroed channel reads exactly "
            "0 dB); -inf: the reference channel is all zero; signal_share: the channel's part of the output's "
            "reference energy (a tiny share is a class no image shows).</p>",
            html_table(worst_channels_table(df), "table-worst-channels")]


def build_report(store: ResultStore, *, filters: Sequence[str] = (), sort: str | None = None,
                 kinds: Sequence[str] | None = None, title: str = "Quant-Trim edge benchmark report",
                 **plot_kwargs: Any) -> tuple[str, dict[str, str]]:
    """The report as one HTML string, plus the plots that were skipped and why."""
    from harness.analysis.compare import apply_filters
    from harness.analysis.figures import KINDS

    df = apply_filters(store.records, filters)
    view = ResultStore(records=df, manifests=store.manifests, problems=store.problems)
    tables = build_tables(df, (), sort)
    head = headline_html(build_headline(df, tables["deltas"]))
    main_view, main_notes = main_table_for_report(tables["main"])
    plots_html, skipped = plots_section(view, list(kinds or KINDS), **plot_kwargs)
    runs = sorted({str(r) for r in df["run_id"].dropna()}) if not df.empty else []
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {_e(now)} from {len(store.manifests)} run(s): {_e(", ".join(runs) or "none")}'
        + (f"; filters: {_e(' '.join(filters))}" if filters else "") + ". Empty cells: not measured.</p>",
        head, status_summary(df),
        f'<h2 id="tables">{_e(TABLE_TITLES["main"])}</h2>',
        html_table(main_view, "table-main", headers=HEADERS), notes_html(main_notes, "notes-main"),
        f"<h2>{_e(TABLE_TITLES['deltas'])}</h2>", html_table(tables["deltas"], "table-deltas"),
        f"<h2>{_e(TABLE_TITLES['cost'])}</h2>",
        '<p class="meta">fps_per_w = FPS / average power (inferences per joule at batch 1); price_eur_per_w = '
        "price / average peak power; w_per_eur = its inverse, the quantity paper Table 10 prints as "
        "\u201cprice per watt\u201d.</p>",
        html_table(tables["cost"], "table-cost"),
        *outputs_section(df),
        '<h2 id="plots">Figures</h2>', plots_html,
        '<h2 id="environment">Environment</h2>', environment_section(store),
    ]
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
           f"<style>{_CSS}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n")
    return doc, skipped


def write_report(store: ResultStore, out: str | Path, **kwargs: Any) -> tuple[Path, dict[str, str]]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc, skipped = build_report(store, **kwargs)
    out.write_text(doc, encoding="utf-8")
    return out, skipped


__all__ = ["build_report", "environment_section", "html_table", "plots_section", "write_report"]
