"""`python -m harness plot`: figures from runs, training logs and checkpoints (PNG + SVG)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_subparser(subparsers: Any) -> None:
    from harness.analysis.figures import KINDS

    p = subparsers.add_parser(
        "plot", help="power-throughput, accuracy-throughput, latency, training and distribution figures",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Figures in the paper's encoding: colour = device, marker = precision, filled = the device's\n"
                    "default runtime, unfilled = another runtime (e.g. TensorRT). Missing power is written on the\n"
                    "panel, never drawn as zero; estimated power is drawn faded with dashed whiskers.",
        epilog="examples:\n"
               "  python -m harness plot results/RUN                         # every kind into plots/\n"
               "  python -m harness plot results/ --kind power-throughput --filter precision=int8\n"
               "  python -m harness plot results/RUN --kind accuracy-throughput --metric logit_mse\n"
               "  python -m harness plot --kind training --train-logs runs/train/\n"
               "  python -m harness plot --kind distributions --checkpoints a-map.onnx a-quanttrim.onnx")
    p.add_argument("paths", nargs="*", metavar="RUN", help="run directories, records.jsonl files or folders of runs")
    p.add_argument("--kind", action="append", choices=KINDS + ("all",), default=None,
                   help="which figure(s); repeat for several (default: all)")
    p.add_argument("--out", type=Path, default=Path("plots"), metavar="DIR", help="output folder (default: plots/)")
    p.add_argument("--format", action="append", choices=("png", "svg", "pdf"), default=None, dest="formats",
                   help="file formats; repeat for several (default: png and svg)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="keep records matching (same syntax as `compare --filter`)")
    p.add_argument("--metric", default=None,
                   help="fidelity metric for accuracy-throughput (default: top1, else top1_agreement, logit_mse, ...)")
    p.add_argument("--train-logs", nargs="+", default=[], type=Path, metavar="PATH",
                   help="trainer JSONL logs or folders of them (default: *.jsonl found under the runs)")
    p.add_argument("--checkpoints", nargs="+", default=[], type=Path, metavar="ONNX",
                   help="checkpoints for the distributions figure (default: those in the runs' manifests)")
    p.add_argument("--no-activations", action="store_true",
                   help="distributions: weights only (skip running the models for activations)")
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from harness.analysis.compare import CompareError, apply_filters
    from harness.cli.compare_cmd import load_with_warnings
    from harness.analysis.figures import KINDS, checkpoint_spec, make_plots, store_kinds
    from harness.store.reader import NoRunsError

    kinds = list(KINDS) if not args.kind or "all" in args.kind else list(dict.fromkeys(args.kind))
    problem = missing_paths_error(args.train_logs, "--train-logs") or missing_paths_error(args.checkpoints,
                                                                                         "--checkpoints")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    store = None
    needs_store = any(k in store_kinds() for k in kinds)
    if args.paths or needs_store:
        try:
            store = load_with_warnings(args.paths)
            if args.filter:
                store.records = apply_filters(store.records, args.filter)
        except (NoRunsError, CompareError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    written, skipped = make_plots(
        store, kinds, args.out, formats=tuple(args.formats or ("png", "svg")), metric=args.metric,
        training_logs=args.train_logs or list(args.paths), checkpoints=[checkpoint_spec(p) for p in args.checkpoints],
        activations=not args.no_activations)
    for kind, files in written.items():
        print(f"{kind}: " + ", ".join(str(f) for f in files))
    for kind, why in skipped.items():
        print(f"{kind}: skipped: {why}", file=sys.stderr)
    return 0 if written else 1


def missing_paths_error(paths: list[Path], flag: str) -> str | None:
    """'FLAG PATH does not exist ...' for the first given path that is not there, else None."""
    for path in paths:
        if not Path(path).exists():
            hint = ("pass the trainer's per-epoch log files (OUT/log.jsonl of `python -m quanttrim.train`) or the "
                    "folder holding them" if flag == "--train-logs" else "pass existing .onnx files")
            return f"{flag} {path} does not exist (looked in {Path.cwd()}); {hint}"
    return None
