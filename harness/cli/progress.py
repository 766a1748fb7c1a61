"""Progress display and the end-of-run summary for `python -m harness run`.

The summary fits the terminal (80 columns and up) without wrapping a number: checkpoints get one-letter
labels with a legend, headers carry the units, numbers have fixed significant digits, long notes become
numbered footnotes, jobs that did not run are grouped one line per reason under the table, and the last
lines say where the results are and what to run next.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from string import ascii_uppercase
from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.bench.launch import Launcher
from harness.bench.plan import LeftOut
from harness.bench.runner import BenchmarkOptions, RunResult, run_benchmark
from harness.cli.console import make_console
from harness.cli.textview import Column, Footnotes, fit_table, pct, sig
from harness.store.labels import (agreement, precision_label, primary_mse, throughput_point, timing_label,
                                  timing_origin)
from harness.store.reader import checkpoint_name
from harness.store.layout import RECORDS_FILE
from harness.store.records import JobRecord

#: The footnote of a row whose validation outputs came from an earlier run (harness.bench.outputs_cache).
REUSED_NOTE = ("accuracy and fidelity scored on validation outputs an earlier run in this results folder computed "
               "for the same artifact, runtime, threads and data, all of them or the prefix this run's pass resumed "
               "from (extra.validation_reused gives the counts; timing measured now; --revalidate reruns the pass)")
#: The runner's per-job busy-host warning starts with this; the summary says it once per run instead.
BUSY_PREFIX = "other processes are using the CPUs"


def checkpoint_letters(records: Sequence[JobRecord]) -> dict[str, str]:
    """checkpoint -> "A", "B", ... in order of first appearance (AA, AB, ... past 26)."""
    out: dict[str, str] = {}
    for r in records:
        if r.checkpoint not in out:
            i = len(out)
            out[r.checkpoint] = ascii_uppercase[i] if i < 26 else ascii_uppercase[i // 26 - 1] + ascii_uppercase[i % 26]
    return out


def _profiles(records: Sequence[JobRecord]) -> dict[str, dict[str, Any] | None]:
    from harness.store.reader import bundled_profile

    return {d: bundled_profile(d) for d in {r.device for r in records}}


def _top_level_parts(text: str, sep: str = ";") -> list[str]:
    """``text`` split at ``sep`` outside parentheses (the notes a record joins with "; " may quote a "; " inside)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == sep and depth <= 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def _notes(r: JobRecord) -> list[str]:
    """Every long note a row carries (each becomes a footnote)."""
    stand_in = timing_origin(r.to_dict()) == "stand-in"
    notes = [n.strip() for n in _top_level_parts(r.timing_note or "") if n.strip()
             and not (stand_in and "is not this host" in n)]  # said below, with the machine's name
    if r.top1 is None:   # why the label metrics are empty, when the data had labels that did not fit
        notes += [n for n in (r.scoring_notes or ()) if "label metrics empty" in n]
    if r.extra.get("validation_note"):
        notes.append(str(r.extra["validation_note"]))
    if r.extra.get("validation_reused"):
        notes.append(REUSED_NOTE)
    if stand_in:
        notes.append(f"timed on {r.measured_on}, standing in for {r.device}")
    if r.power_avg_w is None and r.power_unavailable_reason:
        notes.append(f"power n/a: {r.power_unavailable_reason}")
    elif r.power_estimated:
        notes.append("power estimated from the device profile, not measured")
    return list(dict.fromkeys(notes))


def worst_output_snr(r: JobRecord) -> tuple[str | None, float | None]:
    """(output name, SNR dB) of the record's worst-scored output: the table's SNR is the primary output's, but a
    multi-output model (a detector's box and score heads) can break on another one."""
    scored = [(o.get("name"), o["snr_db"]) for o in (r.outputs or ()) if o.get("snr_db") is not None]
    if not scored:
        return None, r.snr_db
    return min(scored, key=lambda pair: pair[1])


def summary_columns(letters: dict[str, str], labels: dict[str, str], notes: Footnotes, many_devices: bool,
                    any_power: bool = True) -> list[Column]:
    """The summary's columns, most important with the highest priority (dropped last on narrow terminals)."""
    def power(r: JobRecord) -> str:
        if r.power_avg_w is None:
            return "n/a"
        return sig(r.power_avg_w) + ("~" if r.power_estimated else "")

    cols = [
        Column("ck", lambda r: letters[r.checkpoint], 9, numeric=False),
        Column("device", lambda r: r.device, 8 if many_devices else 1, numeric=False, min_width=6),
        Column("backend", lambda r: r.backend, 9, numeric=False),
        Column("precision", lambda r: labels[r.job_id], 9, numeric=False, min_width=13),
        Column("p50 ms", lambda r: sig(r.latency_ms_p50), 7),
        Column("p99 ms", lambda r: sig(r.latency_ms_p99), 3),
        Column("FPS", lambda r: sig(r.fps), 9),
        Column("samples/s", lambda r: sig(r.throughput_samples_per_s), 8),   # offline runs only (render_summary)
        Column("b×streams", lambda r: throughput_point(r.to_dict()), 7, numeric=False),
        Column("W", power, 6 if any_power else 4),  # all "n/a": the footnote says why
        Column("top-1 %", lambda r: pct(r.top1), 8),
        Column("agree %", lambda r: pct(agreement(r.to_dict())), 6),
        Column("MSE", lambda r: sig(primary_mse(r.to_dict()), 2), 4),
        Column("SNR dB", lambda r: sig(r.snr_db), 2),
        Column("ECE", lambda r: sig(r.ece, 2), 1),
        Column("timing", lambda r: timing_label(r.to_dict()), 9, numeric=False),
        Column("notes", lambda r: notes.refs(_notes(r)), 9, numeric=False),
    ]
    return cols


def _drop_empty_timing(cols: list[Column], rows: Sequence[JobRecord]) -> list[Column]:
    """The timing column only when a row has something to mark (an empty column would fold the labels), the
    throughput columns only when a row has a throughput (the offline scenario)."""
    drop = set()
    if not any(timing_label(r.to_dict()) for r in rows):
        drop.add("timing")
    if not any(r.throughput_samples_per_s is not None for r in rows):
        drop.update(("samples/s", "b×streams"))
    return [c for c in cols if c.header not in drop]


def _legend(letters: dict[str, str]) -> list[str]:
    return [f"{letter} = {escape(checkpoint_name(cp))}" for cp, letter in letters.items()]


def not_run_lines(records: Sequence[JobRecord], letters: dict[str, str]) -> list[str]:
    """One line per (status, reason) for jobs that did not finish ok: what, how many, why."""
    groups: dict[tuple[str, str], list[JobRecord]] = defaultdict(list)
    for r in records:
        if r.status != "ok":
            reason = (r.error_message or "no reason recorded").strip().splitlines()[0]
            groups[(r.status, reason)].append(r)
    lines = []
    for (status, reason), rs in groups.items():
        # A calibration method (or granularity) is named only where the run asked for several of it.
        what = sorted({f"{r.backend} {r.precision}" + "".join(f" {v}" for v in _distinct_parts(r, records))
                       for r in rs})
        shown = ", ".join(what[:4]) + (f", +{len(what) - 4} more" if len(what) > 4 else "")
        stage = {r.failed_stage for r in rs if r.failed_stage and r.failed_stage != "plan"}
        where = f" at {'/'.join(sorted(stage))}" if stage else ""
        colour = "yellow" if status == "unsupported" else "red"
        lines.append(f"[{colour}]{status}{where}[/] ({len(rs)} job{'s' if len(rs) > 1 else ''}: {escape(shown)}): "
                     f"{escape(reason)}")
    return lines


def _distinct_parts(r: JobRecord, records: Sequence[JobRecord]) -> list[str]:
    """The record's calibration method and weight granularity, each where the run's records differ in it."""
    parts = []
    if r.calibration_method and len({x.calibration_method for x in records if x.calibration_method}) > 1:
        parts.append(r.calibration_method)
    if r.per_channel is not None and len({x.per_channel for x in records if x.per_channel is not None}) > 1:
        parts.append("per-channel" if r.per_channel else "per-tensor")
    return parts


def left_out_lines(left_out: Sequence[LeftOut]) -> list[str]:
    """One line per reason for jobs the default run did not plan: what, how many, why, how to include them."""
    groups: dict[tuple[str, str], list[LeftOut]] = defaultdict(list)
    for j in left_out:
        groups[(j.reason, j.include_with)].append(j)
    lines = []
    for (reason, include), js in groups.items():
        what = ", ".join(sorted({f"{j.backend} {j.precision}" for j in js}))
        lines.append(f"[cyan]not in the default run[/] ({len(js)} job{'s' if len(js) > 1 else ''}: {escape(what)}): "
                     f"{escape(reason)}; include with {escape(include)}")
    return lines


def render_summary(records: Sequence[JobRecord], run_id: str, run_dir: Path, console: Console,
                   eval_source: str = "", busy_jobs: int = 0, planned: int = 0,
                   left_out: Sequence[LeftOut] = ()) -> None:
    """Print the end-of-run summary on ``console`` (fits ``console.width``; see the module docstring)."""
    letters = checkpoint_letters(records)
    profiles = _profiles(records)
    labels = {r.job_id: precision_label(r.to_dict(), profiles.get(r.device), short=True) for r in records}
    ok = [r for r in records if r.status == "ok"]
    devices = sorted({r.device for r in records})
    notes = Footnotes()
    title = f"run {run_id}" + (f" on {devices[0]}" if len(devices) == 1 else "")
    if eval_source:
        console.print(f"evaluation data: {escape(eval_source)}")
    if ok:
        cols = summary_columns(letters, labels, notes, len(devices) > 1, any(r.power_avg_w is not None for r in ok))
        table, _kept = fit_table(ok, _drop_empty_timing(cols, ok), console.width, title=title)
        console.print(table)
    else:
        console.print(f"[bold]{escape(title)}[/]: no job finished ok")
    for line in _legend(letters):
        console.print(line)
    for line in notes.lines():
        console.print(escape(line))
    for line in not_run_lines(records, letters):
        console.print(line)
    for line in left_out_lines(left_out):
        console.print(line)
    broken = [f"{r.job_id} ({name}: {snr:.3g} dB)" if len(r.outputs or ()) > 1 else r.job_id
              for r in ok for name, snr in [worst_output_snr(r)] if snr is not None and snr <= 0.0]
    if broken:  # ok means "ran and was scored"; an SNR at or below 0 dB means the output is no better than silence
        console.print(f"[yellow]warning:[/] {len(broken)} ok job(s) score at or below 0 dB SNR against FP32 on an "
                      "output (no closer to the reference than zeros; see `compare --outputs`): "
                      + escape(", ".join(broken)))
    if busy_jobs:
        console.print(f"[yellow]warning:[/] other processes were using the CPUs during {busy_jobs} of "
                      f"{len(records)} job(s): their latencies may be inflated; rerun on a quiet host to confirm")
    counts = Counter(r.status for r in records)
    console.print("jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) if counts else
                  f"jobs: all {planned} planned job(s) already had records; none ran")
    console.print(f"results: {escape(str(run_dir / RECORDS_FILE))}")
    console.print(f"next: python -m harness compare {escape(str(run_dir))}   (also: plot, report)")


def run_with_progress(options: BenchmarkOptions, console: Console | None = None, launcher: Launcher | None = None) -> int:
    console = console or make_console()
    busy: list[str] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("planning", total=None)

        def progress(job_id: str, index: int, total: int) -> None:
            bar.update(task, description=job_id if job_id != "done" else "done", completed=index, total=total)

        def warn(message: str) -> None:
            if message.startswith(BUSY_PREFIX):
                busy.append(message)
                if len(busy) > 1:
                    return  # said once per run; the summary counts the jobs
                message = message.split(": latency of")[0] + ": latencies may be inflated (said once per run)"
            bar.console.print(f"[yellow]warning:[/] {escape(message)}")

        def info(message: str) -> None:
            bar.console.print(f"[cyan]note:[/] {escape(message)}")

        result: RunResult = run_benchmark(options, progress=progress, warn=warn, info=info, launcher=launcher)
    records = run_records(result)
    busy_jobs = sum(1 for r in result.records if r.host_busy) or len(busy)
    render_summary(records, result.run_id, result.run_dir, console, result.eval_source, busy_jobs,
                   result.planned, result.left_out)
    if records and not result.records:
        console.print(f"this attempt ran no job: all {result.planned} planned job(s) already had records")
    if records and not any(r.status == "ok" for r in records):
        console.print("[red]no job of this run finished ok[/]: the reasons are listed above")
        return 1  # a script must see that nothing was measured
    return 0


def run_records(result: RunResult) -> list[JobRecord]:
    """Every record of the run, earlier attempts included: a resumed run's summary is the whole run's."""
    from harness.store.reader import read_records

    path = Path(result.run_dir) / RECORDS_FILE
    if not path.exists():
        return list(result.records)
    return [JobRecord.from_dict(d) for d in read_records(path)]
