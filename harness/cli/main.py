"""`python -m harness`: run benchmarks, list devices and backends, and the analysis subcommands."""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Sequence

#: Modules that contribute subcommands through `add_subparser(subparsers)`.
SUBCOMMAND_MODULES = (
    "harness.cli.power_cmd",
    "harness.cli.env_cmd",
    "harness.cli.tvm_db_cmd",
    "harness.cli.fidelity_cmd",
    "harness.cli.compare_cmd",
    "harness.cli.plot_cmd",
    "harness.cli.report_cmd",
    "harness.cli.fleet_cmd",
    "quanttrim.mixed_precision.cli",   # torch is imported only when the subcommand runs
)

EXIT_OK, EXIT_USAGE, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 1, 130, 143


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _power_option(text: str):
    from harness.cli.power_cmd import parse_source_option

    return parse_source_option(text)


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for convert in (int, float):
        try:
            return key, convert(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    from harness.cli.data_args import add_data_arguments

    p = sub.add_parser(
        "run", help="benchmark checkpoints on a device's backends and precisions",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compile each checkpoint with every backend the device offers, at every precision, time it\n"
                    "(warmup + timed iterations × runs) and score its outputs against the FP32 ONNX Runtime\n"
                    "reference. Each job runs in a child process: a crash or hang becomes a record, not a dead run.",
        epilog="examples:\n"
               "  python -m harness run                          # bundled MAP + Quant-Trim checkpoints on this CPU\n"
               "  python -m harness run --device jetson_orin     # TensorRT & co. where present, host reference otherwise\n"
               "  python -m harness run --checkpoint m.onnx --backends onnxruntime --precisions fp32,int8 --quick\n"
               "  python -m harness run --checkpoint m.onnx --data images/ --model-card m.card.toml  # your model\n"
               "  python -m harness run --resume 20261125-170000-ab12   # finish an interrupted run\n"
               "  python -m harness run --cluster tcp://HOST:8786 --device rk3588,jetson_orin   # on a fleet\n")
    p.add_argument("--device", default="cpu", help="device profile name (see `python -m harness devices`) or a .toml "
                   "path; comma-separate several (default: cpu, this host)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                   help="ONNX or TFLite model; repeat for several. Default: the bundled resnet20-fmnist-map and "
                        "resnet20-fmnist-quanttrim checkpoints")
    add_data_arguments(p)
    p.add_argument("--backends", type=_csv, help="comma-separated subset of the device's backends")
    p.add_argument("--precisions", type=_csv, help="comma-separated subset of the device's precisions "
                   "(fp32, fp16, bf16, int8, int8-dynamic, w8a16, ...)")
    p.add_argument("--calibrations", type=_csv, help="calibration methods for static INT precisions, one job each "
                   "(minmax, entropy, percentile, mse, kl, learned); default: the backend's own default")
    gran = p.add_mutually_exclusive_group()
    gran.add_argument("--per-tensor", dest="per_channel", action="store_false", default=None,
                      help="quantize weights per tensor (default: the device policy's, else per channel)")
    gran.add_argument("--per-channel", dest="per_channel", action="store_true", help="quantize weights per channel")
    p.add_argument("--warmup", type=int, default=20, help="warmup iterations (default 20)")
    p.add_argument("--iters", type=int, default=200, help="timed iterations per run (default 200)")
    p.add_argument("--runs", type=int, default=5, help="timed runs; the record holds medians over runs (default 5)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the timed loop (default 1)")
    p.add_argument("--scenario", choices=("single-stream", "offline"), default="single-stream",
                   help="single-stream: batch-1 latency (default); offline: throughput in samples/s from a batch "
                        "sweep 1, 2, 4, ... (up to --max-batch, or --latency-limit, or --memory-limit) and, where the "
                        "runtime has them (OpenVINO), its own streams; the record keeps the batch and streams")
    p.add_argument("--max-batch", type=int, default=64, help="offline: largest batch of the sweep (default 64)")
    p.add_argument("--latency-limit", type=float, default=1000.0, metavar="MS",
                   help="offline: stop the sweep after a batch whose median latency exceeds MS (default 1000)")
    p.add_argument("--calib-samples", type=int, default=256, help="calibration samples: drawn from the training split (demo), --calib-data, or split off --data "
                   "(default 256; at most half of --data)")
    p.add_argument("--calib-seed", type=int, default=0, help="seed of the calibration draw (default 0)")
    p.add_argument("--eval-samples", type=int, help="evaluation images (default: the whole test set; --quick: 500)")
    p.add_argument("--quick", action="store_true", help="smoke protocol: 5 warmup + 50 timed iterations × 1 run on "
                   "500 images, marked quick in every record")
    p.add_argument("--all-jobs", action="store_true",
                   help="plan every job the device offers; without it a run that names no --backends and no "
                        "--precisions leaves out untuned TVM INT8 (naive loops, ~1 min per job) and says so")
    p.add_argument("--fidelity-only", action="store_true", help="skip the timed loop; only score outputs")
    p.add_argument("--threads", type=int, help="intra-op threads per session (default: one per CPU the job may use)")
    p.add_argument("--cpus", type=lambda t: tuple(int(c) for c in _csv(t)),
                   help="pin every job to these CPU ids, e.g. 0,1 (recorded; default: all CPUs this process may use)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before a job is killed (default 900)")
    p.add_argument("--validate-budget", type=float, default=20.0, metavar="SECONDS",
                   help="a job's validation pass stops after this long and scores the images done so far, saying so "
                        "in the record (default 20; 0 = no limit)")
    p.add_argument("--revalidate", action="store_true",
                   help="run every job's validation pass from the first image even when an earlier run in --results "
                        "validated the same artifact on the same data with the same runtime and threads (default: "
                        "reuse its outputs, or resume the pass where its budget cut it; the record says so in "
                        "extra.validation_reused)")
    p.add_argument("--power-period-ms", type=float, default=10.0, help="power sampling period (default 10 ms)")
    p.add_argument("--power-estimate", action="store_true", help="where no sensor exists, estimate power from the "
                   "profile's typical power (labelled estimated everywhere)")
    p.add_argument("--power-option", action="append", default=[], type=_power_option, metavar="SOURCE.KEY=VALUE",
                   help="option for a power source, e.g. usb_meter.port=/dev/ttyUSB0, usb_meter.protocol=um25c, "
                        "nvml.index=1, ina3221.rails=VDD_IN (repeatable; see `python -m harness power --help`)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results directory (default ./results)")
    p.add_argument("--run-id", help="name of the run directory (default: timestamp)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue RUN_ID, skipping jobs that already have a record")
    p.add_argument("--backend-option", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   help="compile option for the backends of the run that know it, e.g. tuning_trials=64 (TVM), "
                        "int8_mode=explicit (TensorRT); a key no backend of the run knows is an error listing the "
                        "valid ones (`python -m harness backends` lists them)")
    p.add_argument("--target", help="backend target: an OpenVINO plugin (CPU, GPU, NPU), TensorRT dla0/dla1, "
                   "an RKNN board (adb id); default: the backend's own")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first, to register a backend adapter that is not installed as an entry point")
    p.add_argument("--memory-limit", type=float, default=None, metavar="MB",
                   help="kill a job whose resident memory (worker and helpers) exceeds MB; it is recorded as failed, "
                        "'out of memory at N MB' (default: no limit)")
    p.add_argument("--bundled-data", action="store_true", help="use the bundled 1,000-image sample even when the "
                   "full Fashion-MNIST is installed")
    from harness.cli.fleet_cmd import add_cluster_arguments

    add_cluster_arguments(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from harness.cli.progress import run_with_progress
    from harness.bench.runner import BenchmarkOptions

    options = BenchmarkOptions(
        devices=tuple(_absolute_if_path(d) for d in _csv(args.device)), checkpoints=tuple(args.checkpoint), backends=args.backends,
        precisions=args.precisions, calibrations=args.calibrations, per_channel=args.per_channel,
        warmup=args.warmup, iters=args.iters, runs=args.runs, batch=args.batch, calib_samples=args.calib_samples,
        eval_samples=args.eval_samples, calib_seed=args.calib_seed, quick=args.quick,
        fidelity_only=args.fidelity_only, results_dir=args.results, run_id=args.resume or args.run_id,
        resume=bool(args.resume), timeout_s=args.timeout, validate_budget_s=args.validate_budget or None,
        reuse_outputs=not args.revalidate, all_jobs=args.all_jobs,
        threads=args.threads, cpu_affinity=args.cpus,
        power_period_ms=args.power_period_ms, power_estimate=args.power_estimate,
        power_source_options=tuple(args.power_option), prefer_full_dataset=not args.bundled_data, plugin_modules=tuple(args.plugin), backend_options=tuple(args.backend_option), target=args.target, memory_limit_mb=args.memory_limit,
        scenario=args.scenario, offline_max_batch=args.max_batch, offline_latency_limit_ms=args.latency_limit,
        command="python -m harness " + shlex.join(getattr(args, "argv", sys.argv[1:])),
        data_path=args.data, calib_data_path=args.calib_data, model_card_path=args.model_card,
    )
    from harness.cli.fleet_cmd import fleet_launcher

    launcher = fleet_launcher(args)  # None unless --cluster
    try:
        return run_with_progress(options, launcher=launcher)
    finally:
        if launcher is not None:
            launcher.close()


def add_devices_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list the device profiles")
    p.add_argument("name", nargs="?", help="show one profile in full")
    p.set_defaults(func=cmd_devices)


def cmd_devices(args: argparse.Namespace) -> int:
    from rich.table import Table

    from devices import load_all_devices, load_device
    from harness.cli.console import make_console

    console = make_console()
    if args.name:
        import json

        console.print_json(json.dumps(load_device(args.name).to_dict(), default=str))
        return EXIT_OK
    table = Table(title="Device profiles (devices/*.toml)")
    for col in ("name", "device", "form factor", "backends (preferred first)", "precisions", "W/A paths",
                "peak TOPS", "typical W", "price €"):
        table.add_column(col)
    for d in load_all_devices():
        watts = f"{d.typical_power_w:g}" if d.typical_power_w else (
            f"{d.typical_power_w_range[0]:g}–{d.typical_power_w_range[1]:g}" if d.typical_power_w_range else "")
        table.add_row(d.name, d.display_name, d.form_factor, ", ".join(d.backends), ", ".join(d.precisions),
                      ", ".join(d.wa_paths), f"{d.peak_tops:g}" if d.peak_tops else "", watts,
                      f"{d.price_eur:g}" if d.price_eur else "")
    console.print(table)
    return EXIT_OK


def add_backends_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backends", help="show each backend's availability on this host and why")
    p.set_defaults(func=cmd_backends)


def cmd_backends(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    import backends
    from harness.cli.console import make_console

    table = Table(title="Backends on this host")
    for col in ("backend", "available", "version", "precisions", "--backend-option keys", "why not / how to fix"):
        table.add_column(col)
    from harness.bench.probe import probe_backends

    # each probe imports an SDK in a child process: a crashing or hanging SDK is a row, not a dead command
    for name, probe in probe_backends(backends.backend_names()).items():
        avail = probe.availability
        ok = probe.refusal is None
        precisions = ", ".join(probe.capabilities.precisions) if probe.capabilities else ""
        table.add_row(name, "yes" if ok else "no", (avail.version if avail else None) or "", precisions,
                      ", ".join(backends.get_backend(name).Options.keys()),
                      escape(avail.reason if avail else "") if ok else
                      escape(avail.explain() if avail and not avail.available else probe.refusal))
    make_console().print(table)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="Cross-backend benchmarking of Quant-Trim and FP32 (MAP) checkpoints on edge accelerators: "
                    "latency, FPS, power and fidelity against the FP32 ONNX Runtime reference.",
        epilog="Start with `python -m harness run` (bundled checkpoints on this CPU), then "
               "`python -m harness compare results/*` and `python -m harness report results/<run>`.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_run_parser(sub)
    add_devices_parser(sub)
    add_backends_parser(sub)
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.add_subparser(sub)
    return parser


def _absolute_if_path(text: str) -> str:
    """A device given as a .toml path becomes absolute; a profile name stays a name."""
    return os.path.abspath(text) if text.endswith(".toml") or os.sep in text else text


def resolve_paths(args: argparse.Namespace) -> None:
    """Make every path argument absolute, once, here: nothing below depends on the working directory."""
    for key, value in vars(args).items():
        if isinstance(value, Path):
            setattr(args, key, value.expanduser().resolve())
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            setattr(args, key, [v.expanduser().resolve() for v in value])
        elif key in ("checkpoint", "paths") and isinstance(value, list) and all(isinstance(v, str) for v in value):
            setattr(args, key, [os.path.abspath(os.path.expanduser(v)) for v in value])
        elif key == "checkpoint" and isinstance(value, str):
            setattr(args, key, os.path.abspath(os.path.expanduser(value)))


#: Options of `run` whose values are paths: the resume command gives them absolute, so it works from any folder.
_PATH_OPTIONS = {"--checkpoint", "--data", "--calib-data", "--model-card"}


def _absolute_option(option: str, value: str) -> str:
    if option in _PATH_OPTIONS:
        return os.path.abspath(os.path.expanduser(value))
    if option == "--device":
        return ",".join(_absolute_if_path(d) for d in _csv(value))
    return value


def resume_command(argv: Sequence[str], run_id: str, results_dir: Path) -> str:
    """The command that finishes an interrupted run: the same options (paths made absolute), with
    --resume RUN_ID --results DIR in place of --run-id/--resume/--results."""
    drop = {"--run-id", "--resume", "--results"}
    kept: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, value = token.partition("=")
        if token in drop:
            i += 2
            continue
        if eq and name in drop:
            i += 1
            continue
        if eq and name.startswith("--"):
            kept.append(f"{name}={_absolute_option(name, value)}")
        elif token in _PATH_OPTIONS | {"--device"} and i + 1 < len(tokens):
            kept += [token, _absolute_option(token, tokens[i + 1])]
            i += 1
        else:
            kept.append(token)
        i += 1
    return "python -m harness " + shlex.join(kept + ["--resume", run_id, "--results", str(results_dir)])


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def _report_interrupt(exc: KeyboardInterrupt, args: argparse.Namespace) -> int:
    from harness.bench.runner import RunInterrupted

    how = "terminated (SIGTERM)" if isinstance(exc, _Terminated) or isinstance(exc.__context__, _Terminated) \
        else "interrupted"
    code = EXIT_TERMINATED if how.startswith("terminated") else EXIT_INTERRUPTED
    if isinstance(exc, RunInterrupted):
        print(f"\n{how}: run {exc.run_id}: {exc.records_written} new record(s) written this attempt; every record "
              f"so far is kept in {exc.run_dir}\nresume with: "
              f"{resume_command(getattr(args, 'argv', []), exc.run_id, exc.run_dir.parent)}", file=sys.stderr)
    else:
        print(f"\n{how}: records written so far are kept", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    args.argv = argv
    resolve_paths(args)
    from harness.cli.errors import user_error_message

    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (an embedding caller): leave SIGTERM alone
        pass
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        return _report_interrupt(exc, args)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
