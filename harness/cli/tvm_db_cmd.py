"""`python -m harness tvm-db list|export|import`: the TVM MetaSchedule tuning databases (backends.tvm_tuning).

Entries live under ``<results>/.cache/artifacts/tvm/tuning-db/`` (written when a run tunes:
``--backend-option tuning_trials=N``) and, read-only, in ``harness/assets/tvm-tuning/`` (the pre-tuned databases
of the bundled demo checkpoints). A TVM job applies the entry for its (model structure, target) from either
place without tuning; an exported archive carries each workload's best record only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR = 0, 1


def bundled_tuning_dir() -> Path:
    from harness.model.checkpoint import BUNDLED_TVM_TUNING_DIR

    return BUNDLED_TVM_TUNING_DIR


def store_root(results: Path) -> Path:
    """The writable tuning store of a results folder (where TVM jobs of runs into it tune)."""
    from harness.store.layout import ARTIFACT_CACHE_DIR, CACHE_DIR

    return Path(results).expanduser().absolute() / CACHE_DIR / ARTIFACT_CACHE_DIR / "tvm" / "tuning-db"


def add_subparser(subparsers: Any) -> None:
    p = subparsers.add_parser("tvm-db", help="list, export and import TVM tuning databases",
                              formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__,
                              epilog="examples:\n"
                                     "  python -m harness run --backends tvm --backend-option tuning_trials=300\n"
                                     "  python -m harness tvm-db list\n"
                                     "  python -m harness tvm-db export tuned.tar.gz\n"
                                     "  python -m harness tvm-db import tuned.tar.gz --results other-results")
    sub = p.add_subparsers(dest="tvm_db_command", metavar="ACTION")
    ls = sub.add_parser("list", help="every entry: model, target, trials, tasks reached, where it is")
    ex = sub.add_parser("export", help="write entries (best record per workload) to a .tar.gz")
    ex.add_argument("archive", type=Path)
    ex.add_argument("--entry", action="append", default=[], metavar="NAME",
                    help="only this entry folder name (repeatable; default: every entry of the cache)")
    ex.add_argument("--bundled", action="store_true", help="export the bundled entries too")
    im = sub.add_parser("import", help="unpack an exported archive into the results folder's cache")
    im.add_argument("archive", type=Path)
    im.add_argument("--replace", action="store_true", help="replace an entry already there even if it had more trials")
    for s in (ls, ex, im):
        s.add_argument("--results", type=Path, default=Path("results"), help="results directory (default ./results)")
    ls.set_defaults(func=_list)
    ex.set_defaults(func=_export)
    im.set_defaults(func=_import)
    p.set_defaults(func=lambda args: (p.print_help(), EXIT_ERROR)[1])


def _store(args: argparse.Namespace, bundled: bool = True):
    from backends.tvm_tuning import TuningStore

    return TuningStore(store_root(args.results), [bundled_tuning_dir()] if bundled else [])


def _list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from backends.tvm_tuning import target_key
    from harness.cli.console import make_console

    store = _store(args)
    table = Table(title=f"TVM tuning databases ({store.root} and the bundled {bundled_tuning_dir()})")
    for col in ("entry", "model", "target", "conv layout", "trials", "tasks reached", "tuning s", "where"):
        table.add_column(col)
    for e in store.entries():
        table.add_row(e.path.name, e.model_name, target_key(e.target), e.conv_layout, str(e.trials),
                      f"{e.tasks_reached}/{e.tasks}",
                      f"{e.tuning_s:.0f}", "cache" if e.source == "cache" else "bundled")
    make_console().print(table)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    store = _store(args, bundled=args.bundled)
    entries = [e for e in store.entries() if not args.entry or e.path.name in args.entry]
    missing = set(args.entry) - {e.path.name for e in entries}
    if missing:
        print(f"tvm-db export: no entry {', '.join(sorted(missing))} (see `python -m harness tvm-db list`)",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        done = store.export(args.archive, entries or None)
    except ValueError as exc:
        print(f"tvm-db export: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {len(done)} entr{'y' if len(done) == 1 else 'ies'} to {args.archive}")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    import tarfile

    try:
        results = _store(args, bundled=False).import_archive(args.archive, replace=args.replace)
    except (ValueError, OSError, tarfile.TarError) as exc:
        print(f"tvm-db import: cannot import {args.archive}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for entry, outcome in results:
        print(f"{entry.path.name} ({entry.model_name}, {entry.trials} trials): {outcome}")
    return EXIT_OK
