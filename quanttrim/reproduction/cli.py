"""`python -m quanttrim reproduce`: argument parsing and the run (imported by quanttrim.cli)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from quanttrim.config import SNAP_CHOICES
    from quanttrim.reproduction.config import PRESET_NOTES, PRESETS

    r = sub.add_parser(
        "reproduce", help="MAP vs Quant-Trim over seeds, calibration draws and every backend, with the spread",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train MAP and Quant-Trim per model and seed, export them, measure every pair with the harness "
                    "(real CPU backends + every device's emulated policy) for each calibration draw and weight "
                    "granularity, and write report.md: each cell mean ± std over seeds × draws, Quant-Trim − MAP "
                    "with a 95 % bootstrap CI, the cross-backend spread.",
        epilog="presets:\n" + "\n".join(
            f"  {k}: {', '.join(m.name for m in v.models)} × {len(v.seeds)} seed(s) × {len(v.calib_draws)} draw(s) × "
            f"{'/'.join(v.granularities)}, {v.epochs} epoch(s); {PRESET_NOTES.get(k, 'not measured')}"
            for k, v in PRESETS.items())
               + "\nexample:\n  python -m quanttrim reproduce --preset quick --out results/reproduction")
    r.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)} (default quick)")
    r.add_argument("--full", action="store_true", help="shorthand for --preset full")
    r.add_argument("--out", type=Path, default=Path("results/reproduction"), help="output folder (resumable)")
    r.add_argument("--seeds", type=lambda t: tuple(int(s) for s in t.split(",")), help="override the seeds, e.g. 0,1,2")
    r.add_argument("--draws", type=lambda t: tuple(int(s) for s in t.split(",")),
                   help="override the calibration draws (seeds of the calibration subset), e.g. 0,1")
    r.add_argument("--granularities", type=lambda t: tuple(t.split(",")),
                   help="override the weight granularities: per_tensor, per_channel or both")
    r.add_argument("--devices", type=lambda t: tuple(t.split(",")), help="override the device profiles")
    r.add_argument("--backends", type=lambda t: tuple(t.split(",")),
                   help="only these real backends (default: every one available); emulated policies always run")
    r.add_argument("--models", type=lambda t: tuple(t.split(",")), help="only these preset models, e.g. resnet20")
    r.add_argument("--data-dir", help="dataset folder (e.g. CIFAR-10 with --dataset cifar10)")
    r.add_argument("--dataset", help="override the dataset (default fashion-mnist)")
    r.add_argument("--snap-weights", choices=SNAP_CHOICES,
                   help="Quant-Trim export weights, as `quanttrim export --snap-weights` (default no: the trained "
                        "FP32 weights; yes: snapped, as results/reference/reproduction was exported)")
    r.add_argument("--threads", type=int, help="torch/runtime threads (default 1: the cores are shared)")
    r.add_argument("--report-only", action="store_true",
                   help="rebuild report.md, the CSV tables and the figures from <out>/rows.csv without measuring")
    r.add_argument("--eval-samples", type=int, help="override the evaluation images per measurement")


def run(args: argparse.Namespace) -> int:
    from quanttrim.reproduction.config import PRESETS, get_preset
    from quanttrim.reproduction.pipeline import ROWS_FILE, run as run_study
    from quanttrim.reproduction.tables import write_report

    cfg = get_preset("full" if args.full else args.preset).with_overrides(
        seeds=args.seeds, devices=args.devices, data_dir=args.data_dir, dataset=args.dataset, threads=args.threads,
        backends=args.backends, calib_draws=args.draws, granularities=args.granularities,
        eval_samples=args.eval_samples, snap_weights=args.snap_weights)
    if args.models:
        chosen = tuple(m for m in cfg.models if m.name in args.models)
        unknown = sorted(set(args.models) - {m.name for m in chosen})
        if unknown:
            others = [k for k, v in PRESETS.items() if any(m.name in unknown for m in v.models)]
            raise SystemExit(f"--models {','.join(unknown)}: not in preset {cfg.name!r} (its models: "
                             f"{', '.join(m.name for m in cfg.models)})"
                             + (f"; presets with it: {', '.join(others)}" if others else ""))
        cfg = cfg.with_overrides(models=chosen)
    out = args.out.resolve()
    if args.report_only:
        rows = out / ROWS_FILE
        if not rows.exists():
            raise SystemExit(f"--report-only: {rows} does not exist; run the reproduction into {out} first")
        command = previous_command(out / "report.md") or "(unknown: report rebuilt from rows.csv)"
    else:
        rows = run_study(cfg, out, log=lambda m: print(m, file=sys.stderr))
        command = "python -m quanttrim " + shlex.join(sys.argv[1:]) if sys.argv[1:] else f"reproduce --preset {cfg.name}"
    report = write_report(rows, out, command)
    print(f"wrote {report}")
    return 0


def previous_command(report: Path) -> str | None:
    """The command an existing report.md names (so a rebuilt report keeps the measuring command)."""
    import re

    if not report.exists():
        return None
    m = re.search(r"^Command: `([^`]+)`", report.read_text(), re.MULTILINE)
    return m.group(1) if m else None
