"""`python -m harness compare`: side-by-side tables over one or more runs."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

FORMAT_BY_SUFFIX = {".csv": "csv", ".md": "md", ".markdown": "md", ".json": "json", ".txt": "table"}


def add_subparser(subparsers: Any) -> None:
    from harness.analysis.compare import FORMATS, TABLES

    p = subparsers.add_parser(
        "compare", help="compare checkpoints, devices, backends and precisions side by side",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="One table of checkpoint x device x backend x precision (latency percentiles, FPS, power,\n"
                    "energy per inference, every fidelity metric), the Quant-Trim minus MAP deltas, and the cost\n"
                    "and efficiency table (FPS per watt, energy per inference, price per FPS and per watt).\n"
                    "Missing measurements are empty cells, never 0.",
        epilog="examples:\n"
               "  python -m harness compare results/                       # every run under results/\n"
               "  python -m harness compare results/RUN --filter precision=int8 --sort=-fps\n"
               "  python -m harness compare results/ --filter backend=onnxruntime,openvino --format md\n"
               "  python -m harness compare results/ --table cost --format csv --out cost.csv\n"
               "filters: key=value (comma: any of), key!=value, key>=number, key<=number, key>number, key<number;\n"
               "keys are any record field (status, device, backend, precision, recipe, model, calibration_method, ...)")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_DIR",
                   help="run directories, records.jsonl files, or folders of runs (e.g. results/)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="keep rows matching; repeat to combine (all must match)")
    p.add_argument("--sort", default=None, metavar="KEY[,KEY]",
                   help="sort keys, comma-separated; prefix '-' or suffix ':desc' for descending (e.g. --sort=-fps or "
                        "--sort fps:desc,latency_ms_p99)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="output format (default: from --out's suffix, else table)")
    p.add_argument("--table", choices=TABLES + ("all",), default="all", help="which table(s) (default: all)")
    p.add_argument("--all", action="store_true", dest="show_all",
                   help="terminal table: every row, not only the ok ones (csv/md/json always have every row)")
    p.add_argument("--wide", action="store_true",
                   help="terminal: every record column as plain text instead of the fitted table (leaves out only "
                        "checkpoint file name, mean/min/max latency, p5/p95 power and the power source)")
    p.add_argument("--ok-only", action="store_true", help="leave out failed/unsupported/timeout/crashed jobs")
    p.add_argument("--include-stand-ins", action="store_true",
                   help="cost table: keep jobs timed on a stand-in host or a simulator (marked); by default they "
                        "are left out, since their speed is not the device's")
    p.add_argument("--outputs", action="store_true",
                   help="one row per model output (SNR, MSE, cosine, max error, worst channel, role metrics) and the "
                        "worst output channels, instead of the job tables")
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="write to FILE instead of the terminal")
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from harness.analysis.compare import TABLES, CompareError, build_tables, narrow, render
    from harness.store.reader import NoRunsError

    fmt = args.format or (FORMAT_BY_SUFFIX.get(args.out.suffix.lower(), "table") if args.out else "table")
    which = TABLES if args.table == "all" else (args.table,)
    try:
        store = load_with_warnings(args.paths)
        if args.outputs:
            from harness.analysis.outputs import outputs_table, worst_channels_table

            tables = {"outputs": outputs_table(store.records, args.filter),
                      "worst_channels": worst_channels_table(store.records, args.filter)}
            return _emit(render(tables, fmt), args, tables, fmt)
        tables = build_tables(store.records, args.filter, args.sort, which, ok_only=args.ok_only,
                              include_stand_ins=args.include_stand_ins)
    except (NoRunsError, CompareError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if fmt == "table" and not args.wide and not args.out:
        from harness.cli.compare_view import print_tables
        from harness.cli.console import make_console

        print_tables(make_console(), tables, args.show_all)
        return 0
    return _emit(render(narrow(tables) if fmt == "table" and not args.wide else tables, fmt), args, tables, fmt)


def _emit(text: str, args: argparse.Namespace, tables: dict[str, Any], fmt: str) -> int:
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out} ({fmt}; {', '.join(f'{n}: {len(t)} rows' for n, t in tables.items())})",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def load_with_warnings(paths: list[str]) -> Any:
    """load_store, with each skipped line printed as one 'warning: file:line: ...' line on stderr."""
    from harness.store.reader import load_store

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = load_store(paths)
    for problem in store.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return store
