"""`python -m harness report`: one self-contained HTML file with the environment, tables and figures."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_subparser(subparsers: Any) -> None:
    from harness.analysis.figures import KINDS

    p = subparsers.add_parser(
        "report", help="write one self-contained HTML report (tables, figures, environment) that opens offline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Collects the comparison, Quant-Trim minus MAP and cost tables, every figure (embedded as\n"
                    "PNG) and each run's environment (command, host, packages, device profiles, checkpoints)\n"
                    "into one HTML file with no external resources.",
        epilog="examples:\n"
               "  python -m harness report results/RUN                  # writes ./report.html\n"
               "  python -m harness report results/ --out out/all-runs.html --filter status=ok\n"
               "  python -m harness report results/RUN --train-logs runs/train/ --checkpoints a-map.onnx a-quanttrim.onnx")
    p.add_argument("paths", nargs="+", metavar="RUN", help="run directories, records.jsonl files or folders of runs")
    p.add_argument("--out", type=Path, default=Path("report.html"), metavar="FILE",
                   help="output HTML file (default: report.html in the current directory)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="keep records matching (same syntax as `compare --filter`)")
    p.add_argument("--sort", default=None, metavar="KEY[,KEY]", help="sort keys for the tables (see compare)")
    p.add_argument("--kind", action="append", choices=KINDS, default=None,
                   help="figures to include; repeat for several (default: all)")
    p.add_argument("--metric", default=None, help="fidelity metric for the accuracy-throughput figure")
    p.add_argument("--train-logs", nargs="+", default=[], type=Path, metavar="PATH",
                   help="trainer JSONL logs or folders of them for the training figure")
    p.add_argument("--checkpoints", nargs="+", default=[], type=Path, metavar="ONNX",
                   help="checkpoints for the distributions figure (default: those in the runs' manifests)")
    p.add_argument("--no-activations", action="store_true", help="distributions: weights only")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from harness.analysis.compare import CompareError
    from harness.cli.compare_cmd import load_with_warnings
    from harness.analysis.figures import checkpoint_spec
    from harness.analysis.report import write_report
    from harness.cli.plot_cmd import missing_paths_error
    from harness.store.reader import NoRunsError

    problem = missing_paths_error(args.train_logs, "--train-logs") or missing_paths_error(args.checkpoints,
                                                                                         "--checkpoints")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        store = load_with_warnings(args.paths)
        out, skipped = write_report(
            store, args.out, filters=args.filter, sort=args.sort, kinds=args.kind, metric=args.metric,
            training_logs=args.train_logs, checkpoints=[checkpoint_spec(p) for p in args.checkpoints],
            activations=not args.no_activations)
    except (NoRunsError, CompareError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for kind, why in skipped.items():
        print(f"note: figure {kind} not drawn: {why}", file=sys.stderr)
    print(f"wrote {out.resolve()} ({out.stat().st_size / 1024:.0f} KiB); open it in a browser (works offline)")
    return 0
