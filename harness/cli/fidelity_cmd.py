"""Subcommands `fidelity`, `layers` and `calib-sensitivity` (registered by harness.cli.main's SUBCOMMAND_MODULES)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _csv(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _console() -> Any:
    """A rich console wide enough for the tables even when stdout is a pipe or a file."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)


def _abs(text: str) -> str:
    """Checkpoint paths are made absolute here, so every later stage (and child process) finds the same file."""
    return str(Path(text).expanduser().resolve())


def add_subparser(subparsers: Any) -> None:
    from harness.cli.data_args import add_data_arguments

    p = subparsers.add_parser(
        "fidelity", help="cross-backend fidelity report (real backends where available, policy emulation otherwise)",
        description="Top-1/top-5, agreement, logit MSE, SNR, ECE and Brier of each checkpoint on every device's "
                    "backends or emulated quantization policies, the spread across backends, and the checkpoints "
                    "side by side. Writes fidelity.csv, spread.csv, comparison.csv and fidelity.md to --out.")
    p.add_argument("--checkpoint", action="append", default=[], metavar="ONNX", type=_abs,
                   help="checkpoint to evaluate (repeat; default: the bundled MAP and Quant-Trim checkpoints)")
    add_data_arguments(p)
    p.add_argument("--devices", type=_csv, default=None, help="comma-separated device profiles (default: all)")
    p.add_argument("--quick", action="store_true", help="a few hundred evaluation images (smoke run)")
    p.add_argument("--eval-samples", type=int, default=None, help="evaluation images (default: the whole test set)")
    p.add_argument("--always-emulate", action="store_true",
                   help="also emulate the policies of devices whose real backend is available (real vs emulated)")
    p.add_argument("--calibrations", type=_csv, default=None,
                   help="calibration methods for integer precisions, e.g. learned (the checkpoint's *.calib.json "
                        "ranges) or minmax,percentile (default: each backend's / device policy's own)")
    p.add_argument("--out", type=Path, default=Path("results/fidelity"), help="output directory")
    p.add_argument("--from-runs", type=Path, nargs="+", default=None, metavar="RUN_DIR",
                   help="rebuild the tables from finished run directories (OUT/runs/*) instead of running jobs")
    p.add_argument("--timeout", type=float, default=900.0, help="per-job timeout in seconds")
    p.add_argument("--threads", type=int, default=None, help="threads per job (default: the runtime's)")
    p.set_defaults(func=cmd_fidelity)

    q = subparsers.add_parser(
        "layers", help="per-layer SNR/cosine of a backend/policy against FP32 (which layer breaks)",
        description="Every intermediate tensor of the compiled graph against the FP32 graph on the same inputs, "
                    "streamed batch by batch; sorted worst single-layer SNR first.")
    q.add_argument("--checkpoint", required=True, metavar="ONNX", type=_abs)
    add_data_arguments(q)
    q.add_argument("--device", required=True, help="device profile whose policy/backend to analyse")
    q.add_argument("--precision", default="int8", help="precision (= the device's policy name), default int8")
    q.add_argument("--backend", default="emulated", help="emulated (default), onnxruntime or rknn")
    q.add_argument("--inputs", type=int, default=64, help="evaluation images to analyse (default 64)")
    q.add_argument("--calibration", default=None, help="override the policy's calibration method")
    q.add_argument("--batch", type=int, default=None, help="images per batch (default: from --max-batch-mb)")
    q.add_argument("--max-batch-mb", type=float, default=256.0, help="memory budget for one batch of intermediates")
    q.add_argument("--sort", choices=("single", "entire"), default="single")
    q.add_argument("--top", type=int, default=25, help="rows shown in the terminal (CSV has all)")
    q.add_argument("--out", type=Path, default=None, help="write layers.csv here")
    q.set_defaults(func=cmd_layers)

    c = subparsers.add_parser(
        "calib-sensitivity", help="how much a checkpoint depends on its calibration set (sizes and sources)",
        description="One device policy built from calibration sets of several sizes, sources and seeds; the spread "
                    "of logit MSE and top-1 across them per checkpoint.")
    c.add_argument("--checkpoint", action="append", default=[], metavar="ONNX", type=_abs)
    add_data_arguments(c)
    c.add_argument("--device", default="hardware_a")
    c.add_argument("--precision", default="int8")
    c.add_argument("--sizes", type=_ints, default=(32, 1024), help="calibration set sizes (default 32,1024)")
    c.add_argument("--sources", type=_csv, default=("train", "bright"),
                   help="comma-separated calibration sources: train, bright, dark, noisy (default train,bright)")
    c.add_argument("--seeds", type=_ints, default=(0, 1), help="calibration draws (default 0,1)")
    c.add_argument("--calibration", default=None, help="override the policy's calibration method")
    c.add_argument("--eval-samples", type=int, default=2000)
    c.add_argument("--quick", action="store_true", help="500 evaluation images, one seed")
    c.add_argument("--out", type=Path, default=Path("results/calibration"))
    c.set_defaults(func=cmd_calib)


def cmd_fidelity(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from harness.analysis.fidelity import FidelityOptions, run_fidelity
    from harness.analysis.fidelity_tables import closing_note
    from harness.cli.analysis_tables import fidelity_tables

    console = _console()
    opts = FidelityOptions(checkpoints=tuple(args.checkpoint), devices=args.devices, quick=args.quick,
                           eval_samples=args.eval_samples, out=args.out, always_emulate=args.always_emulate,
                           calibrations=args.calibrations,
                           timeout_s=args.timeout, threads=args.threads, data_path=args.data,
                           calib_data_path=args.calib_data, model_card_path=args.model_card)

    def progress(job: str, index: int, total: int) -> None:
        if job != "done":
            console.print(f"[dim][{index + 1}/{total}] {job}[/dim]")

    if args.from_runs:
        from harness.analysis.fidelity import report_from_runs

        report = report_from_runs(args.from_runs, args.out)
    else:
        report = run_fidelity(opts, progress=progress)
    for table in fidelity_tables(report):
        console.print(table)
    console.print(escape(closing_note(report)))
    console.print(escape(closing_note(report, "integer")))
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    console.print("written: " + ", ".join(str(f) for f in report.files))
    return 0 if any(r["status"] == "ok" for r in report.rows) else 1


def cmd_layers(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from backends.base import UnsupportedRequest
    from harness.analysis.layerwise import analyze_layers
    from harness.cli.analysis_tables import layers_table

    console = _console()
    images = calibration = None
    try:
        if args.data is not None:
            from harness.cli.data_args import prepare_analysis_data

            _, evaluation, calib = prepare_analysis_data(args, args.checkpoint, args.inputs, 256,
                                                         needs_calibration=args.precision != "fp32")
            images, calibration = evaluation.first, None if calib is None else calib.first
            for note in evaluation.notes:
                console.print(f"[dim]data: {escape(note)}[/dim]")
        report = analyze_layers(args.checkpoint, args.device, args.precision, backend=args.backend,
                                images=images, calibration=calibration, n_inputs=args.inputs, batch_size=args.batch,
                                max_batch_bytes=int(args.max_batch_mb * 1024 * 1024), sort_by=args.sort,
                                calibration_method=args.calibration)
    except (UnsupportedRequest, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    console.print(layers_table(report, top=args.top))
    console.print(f"{len(report.rows)} tensors, {report.n_inputs} inputs in batches of {report.batch_size}, "
                  f"{report.seconds:.1f} s")
    if report.islands:
        console.print("FP32 host islands: " + ", ".join(f"{i['node']} ({i['op_type']})" for i in report.islands))
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    if args.out:
        console.print(f"written: {report.write_csv(Path(args.out) / 'layers.csv')}")
    return 0


def cmd_calib(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from harness.analysis.calib_sensitivity import CalibStudyOptions, run_study, write_outputs
    from harness.cli.analysis_tables import calib_table

    console = _console()
    try:
        opts = CalibStudyOptions(checkpoints=tuple(args.checkpoint), device=args.device, precision=args.precision,
                                 sizes=args.sizes, sources=args.sources,
                                 seeds=args.seeds[:1] if args.quick else args.seeds,
                                 eval_samples=500 if args.quick else args.eval_samples,
                                 calibration_method=args.calibration)
        eval_split = calib_split = None
        if args.data is not None:
            eval_split, calib_split = _study_splits(args, opts)
        study = run_study(opts, eval_split, calib_split, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    console.print(calib_table(study))
    for note in study.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    console.print("written: " + ", ".join(str(f) for f in write_outputs(study, args.out)))
    return 0


def _study_splits(args: argparse.Namespace, opts: Any) -> tuple[Any, Any]:
    """--data/--calib-data as the study's (evaluation, calibration pool) splits. The study scores top-1 against
    labels, so unlabelled data is refused rather than scored against invented labels."""
    from harness.cli.data_args import prepare_analysis_data
    from harness.data.datasets import Split

    if len(opts.checkpoints) != 1:
        raise ValueError("calib-sensitivity --data needs exactly one --checkpoint (the data is fed through its card)")
    _, evaluation, calib = prepare_analysis_data(args, opts.checkpoints[0], opts.eval_samples, max(opts.sizes),
                                                 needs_calibration=True)
    if evaluation.labels is None:
        raise ValueError(f"calib-sensitivity scores top-1 against labels and {evaluation.source} has none; use "
                         f"class sub-folders or an .npz with `labels` (or `run --data` for label-free fidelity)")
    return (Split(evaluation.first, evaluation.labels, evaluation.source), Split(calib.first, None, calib.source))
