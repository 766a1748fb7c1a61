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

from harness.analysis.compare import TABLE_TITLES, build_tables, format_value
from harness.store.reader import ResultStore

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
    "accuracy-throughput": "Arrows go from the MAP checkpoint to the Quant-Trim checkpoint of the same job.",
    "latency": "Boxes from the raw per-iteration timings (p25-p75, median, whiskers p1-p99); jobs without a raw "
               "file show their recorded percentiles.",
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
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_table(df: pd.DataFrame, table_id: str, max_rows: int = 2000) -> str:
    """A DataFrame as an HTML table: missing cells empty (class na), numbers right-aligned, status rows coloured."""
    if df.empty:
        return f'<p class="skipped" id="{_e(table_id)}-empty">(no rows)</p>'
    shown = df.head(max_rows)
    numeric = {c for c in df.columns if df[c].dtype.kind in "fiu"}
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = []
    for rec in shown.to_dict("records"):
        cells = []
        for c in df.columns:
            text = format_value(rec[c], str(c))
            cls = "num" if c in numeric else ""
            if text == "":
                cls = (cls + " na").strip()
            cells.append(f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>")
        status = rec.get("status")
        row_cls = f' class="status-{_e(status)}"' if isinstance(status, str) else ""
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


def figure_png_base64(fig: Any, dpi: int = 110) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plots_section(store: ResultStore, kinds: Sequence[str], **plot_kwargs: Any) -> tuple[str, dict[str, str]]:
    """Every figure embedded as a base64 PNG; kinds with nothing to draw say why. Returns (html, skipped)."""
    from harness.analysis.plots import NoPlotData, build_figure

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
            "lowest first; 0 dB means the channel carries as much error as signal (dead or zeroed); "
            "-inf: the reference channel is all zero.</p>",
            html_table(worst_channels_table(df), "table-worst-channels")]


def build_report(store: ResultStore, *, filters: Sequence[str] = (), sort: str | None = None,
                 kinds: Sequence[str] | None = None, title: str = "Quant-Trim edge benchmark report",
                 **plot_kwargs: Any) -> tuple[str, dict[str, str]]:
    """The report as one HTML string, plus the plots that were skipped and why."""
    from harness.analysis.compare import apply_filters
    from harness.analysis.plots import KINDS

    df = apply_filters(store.records, filters)
    view = ResultStore(records=df, manifests=store.manifests, problems=store.problems)
    tables = build_tables(df, (), sort)
    plots_html, skipped = plots_section(view, list(kinds or KINDS), **plot_kwargs)
    runs = sorted({str(r) for r in df["run_id"].dropna()}) if not df.empty else []
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {_e(now)} from {len(store.manifests)} run(s): {_e(", ".join(runs) or "none")}'
        + (f"; filters: {_e(' '.join(filters))}" if filters else "") + ". Empty cells: not measured.</p>",
        "<h2>Summary</h2>", status_summary(df),
        f'<h2 id="tables">{_e(TABLE_TITLES["main"])}</h2>', html_table(tables["main"], "table-main"),
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
