"""Progress display and the end-of-run summary table for `python -m harness run`."""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from harness.cli.console import make_console
from harness.store.records import JobRecord
from harness.bench.launch import Launcher
from harness.bench.runner import BenchmarkOptions, RunResult, run_benchmark


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def summary_table(records: Sequence[JobRecord], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("checkpoint", "device", "backend", "precision", "status", "p50 ms", "p99 ms", "FPS", "power W",
                "top-1", "agree", "logit MSE", "SNR dB", "ECE", "note"):
        table.add_column(col, overflow="fold")
    for r in records:
        note = r.error_message if r.status != "ok" else "; ".join(
            n for n in (r.timing_note, r.extra.get("validation_note")) if n)
        prec = r.precision + (f" ({r.calibration_method})" if r.calibration_method else "")
        table.add_row(r.checkpoint, r.device, r.backend, prec, r.status, _fmt(r.latency_ms_p50, ".3f"),
                      _fmt(r.latency_ms_p99, ".3f"), _fmt(r.fps, ".0f"), _fmt(r.power_avg_w, ".2f"),
                      _fmt(r.top1, ".4f"), _fmt(r.top1_agreement, ".4f"), _fmt(r.logit_mse, ".3g"),
                      _fmt(r.snr_db, ".1f"), _fmt(r.ece, ".4f"), escape((note or "")[:160]))
    return table


def run_with_progress(options: BenchmarkOptions, console: Console | None = None, launcher: Launcher | None = None) -> int:
    console = console or make_console()
    warnings: list[str] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("planning", total=None)

        def progress(job_id: str, index: int, total: int) -> None:
            bar.update(task, description=job_id if job_id != "done" else "done", completed=index, total=total)

        def warn(message: str) -> None:
            warnings.append(message)
            bar.console.print(f"[yellow]warning:[/] {message}")

        result: RunResult = run_benchmark(options, progress=progress, warn=warn, launcher=launcher)
    console.print(f"evaluation data: {result.eval_source}")
    # Backends refused before running (not installed, precision not offered) are listed once, not per job.
    planned_out = [r for r in result.records if r.status == "unsupported" and r.failed_stage == "plan"]
    shown = [r for r in result.records if r not in planned_out]
    console.print(summary_table(shown, f"run {result.run_id}"))
    groups = Counter((r.backend, r.error_message or "") for r in planned_out)
    for (backend, reason), count in groups.items():
        console.print(f"[yellow]not run[/]: {backend} ({count} job{'s' if count > 1 else ''}): {escape(reason)}")
    counts = Counter(r.status for r in result.records)
    console.print("jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) if counts else
                  "jobs: none new (all finished already)")
    console.print(f"records: {result.run_dir / 'records.jsonl'}")
    return 0
