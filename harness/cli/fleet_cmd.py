"""`python -m harness agent` (a board joins the fleet), `python -m harness fleet` (who is connected) and the
`--cluster` options of `python -m harness run`. Dask is imported only when one of them is used."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

INSTALL_HINT = 'the fleet needs Dask distributed: pip install ".[fleet]"'
SECURITY_NOTE = ("Without TLS anyone who can reach the scheduler's or an agent's port can run code there: use "
                 "tcp:// only on a network you trust, else tls:// with --tls-ca/--tls-cert/--tls-key.")


def _add_tls(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", metavar="PEM", help="CA certificate: connect over TLS (address tls://HOST:PORT)")
    p.add_argument("--tls-cert", metavar="PEM", help="this side's TLS certificate")
    p.add_argument("--tls-key", metavar="PEM", help="this side's TLS private key")


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    """The options `python -m harness run` takes to send its jobs to a fleet."""
    p.add_argument("--cluster", metavar="ADDRESS", help="run each job on the fleet worker of its device through the "
                   "Dask scheduler at ADDRESS (tcp://HOST:8786); records land in this host's results directory. "
                   + SECURITY_NOTE)
    _add_tls(p)


def _import_fleet() -> None:
    try:
        import distributed  # noqa: F401
    except ModuleNotFoundError:
        from harness.fleet import FleetError

        raise FleetError(INSTALL_HINT) from None


def _security(args: argparse.Namespace, address: str, role: str) -> Any:
    from harness.fleet.security import make_security

    return make_security(address, args.tls_ca, args.tls_cert, args.tls_key, role)


def fleet_launcher(args: argparse.Namespace):
    """A DaskLauncher connected to ``--cluster``, or None when the run is local."""
    if not getattr(args, "cluster", None):
        return None
    _import_fleet()
    from harness.fleet.launcher import DaskLauncher

    return DaskLauncher.connect(args.cluster, security=_security(args, args.cluster, "client"))


def add_subparser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="serve this board to a fleet: a Dask worker running one job at a time",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Join the Dask scheduler at --scheduler as a worker that advertises the resource "
                                   "device:<NAME>=1 and runs one job at a time.\n" + SECURITY_NOTE,
                       epilog="example:\n  python -m harness agent --scheduler tcp://192.168.1.10:8786 --device rk3588")
    p.add_argument("--scheduler", required=True, metavar="ADDRESS", help="tcp://HOST:8786 or tls://HOST:8786")
    p.add_argument("--device", help="device profile this board is (default: the profile matching this board)")
    p.add_argument("--listen", metavar="HOST", help="address to bind (default: this host's address on the route to "
                   "the scheduler; never all interfaces unless you pass 0.0.0.0)")
    p.add_argument("--name", help="worker name (default: DEVICE@HOSTNAME)")
    p.add_argument("--cache-dir", type=Path, help="transferred files and compiled artifacts "
                   "(default ~/.cache/quanttrim-fleet)")
    _add_tls(p)
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("fleet", help="list the workers connected to a fleet's scheduler")
    p.add_argument("--scheduler", required=True, metavar="ADDRESS", help="tcp://HOST:8786 or tls://HOST:8786")
    p.add_argument("--json", action="store_true", help="print the workers' facts as JSON")
    _add_tls(p)
    p.set_defaults(func=cmd_fleet)


def cmd_agent(args: argparse.Namespace) -> int:
    _import_fleet()
    from devices import load_device
    from harness.fleet.agent import default_device, serve

    device = args.device or default_device()
    load_device(device)  # an unknown name fails here, listing the valid ones
    serve(args.scheduler, device, listen=args.listen, name=args.name, cache_dir=args.cache_dir,
          security=_security(args, args.scheduler, "worker"))
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    _import_fleet()
    from rich.markup import escape
    from rich.table import Table

    from harness.cli.console import make_console
    from harness.fleet.launcher import DaskLauncher
    from harness.host.hostinfo import harness_version

    launcher = DaskLauncher.connect(args.scheduler, security=_security(args, args.scheduler, "client"))
    try:
        workers = launcher.workers(refresh=True)
    finally:
        launcher.close()
    if args.json:
        print(json.dumps({w.name: w.facts for w in workers.values()}, indent=1, default=str))
        return 0
    mine = harness_version()
    table = Table(title=f"Fleet at {args.scheduler} ({len(workers)} workers; this coordinator: harness {mine})")
    for col in ("worker", "address", "devices", "harness", "host", "platform", "device present"):
        table.add_column(col, overflow="fold")
    for w in sorted(workers.values(), key=lambda w: w.name):
        host = w.facts.get("host") or {}
        plat = w.facts.get("platform") or {}
        platform = ", ".join(str(plat[k]) for k in ("machine", "platform", "jetson_model", "jetpack_version",
                                                    "power_mode") if plat.get(k))
        version = w.harness_version or "?"
        if version != mine:
            version = f"[red]{escape(version)} (differs)[/]"
        table.add_row(w.name, w.address, ", ".join(w.devices) or "(none: not an agent)", version,
                      escape(f"{host.get('hostname', '')} {host.get('cpu_model', '')}".strip()), escape(platform),
                      escape(json.dumps(w.facts.get("device_present") or {})))
    make_console().print(table)
    return 0
