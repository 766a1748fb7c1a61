"""`python -m harness env setup|list`: isolated per-backend toolchain environments (see backends.environments)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK, EXIT_ERROR = 0, 1


def add_subparser(subparsers: Any) -> None:
    from backends.environments import ENV_ROOT_VARIABLE, env_root, env_specs

    names = sorted(env_specs())
    p = subparsers.add_parser(
        "env", help="create and list per-backend toolchain environments (rknn, tvm, ...)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Toolchains whose pins conflict with the main environment (rknn-toolkit2 pins numpy<=1.26.4,\n"
                    "onnx<=1.18) get their own virtualenv with the harness installed; the runner starts that\n"
                    "backend's jobs with the environment's interpreter.\n"
                    f"Default location: {env_root()} (override with --root or ${ENV_ROOT_VARIABLE}).",
        epilog="examples:\n"
               "  python -m harness env setup rknn\n"
               "  python -m harness env setup litert-converter      # onnx2tf, needs Python >= 3.12\n"
               "  python -m harness env setup tpu-mlir              # Sophgo tpu-mlir, Python 3.10, several GB\n"
               "  python -m harness env list")
    sub = p.add_subparsers(dest="env_command", metavar="ACTION")
    s = sub.add_parser("setup", help="create environments with the pinned toolchain and the harness")
    s.add_argument("name", nargs="+", choices=names, help="which environment(s), e.g. rknn litert-converter")
    s.add_argument("--root", default=None, help=f"parent folder of the environments (default {env_root()})")
    s.add_argument("--python", default=None, help="interpreter to build the venv from (default: a fitting one "
                                                    "found on PATH or under ~/.pyenv/versions)")
    s.add_argument("--force", action="store_true", help="delete and recreate an existing environment")
    s.add_argument("--pip-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every pip install (repeat), e.g. --pip-arg=--index-url=URL")
    s.set_defaults(func=_setup)
    ls = sub.add_parser("list", help="show every known environment and whether its toolchain imports")
    ls.add_argument("--root", default=None, help="parent folder of the environments")
    ls.add_argument("--no-probe", action="store_true", help="only check that the folders exist (fast)")
    ls.set_defaults(func=_list)
    p.set_defaults(func=lambda args: (p.print_help(), EXIT_ERROR)[1])


def _setup(args: argparse.Namespace) -> int:
    """Create each named environment in turn; stop at the first that fails (exit 1, naming it)."""
    for name in dict.fromkeys(args.name):
        if _setup_one(name, args) != EXIT_OK:
            return EXIT_ERROR
    return EXIT_OK


def _setup_one(name: str, args: argparse.Namespace) -> int:
    from backends.environments import create_env

    try:
        report = create_env(name, root=args.root, python=args.python, force=args.force,
                            pip_args=tuple(args.pip_arg), log=lambda line: print(line, flush=True))
    except (RuntimeError, KeyError) as exc:
        print(f"env setup {name} failed: {exc}", file=sys.stderr)
        return EXIT_ERROR
    total = sum(report.steps_s.values())
    steps = ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in report.steps_s.items())
    version = report.status.toolchain_version if report.status else None
    print(f"environment {report.name} ready at {report.path} (python {report.python}; toolchain {version}); "
          f"took {total:.1f} s ({steps})")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from backends.environments import env_specs, list_envs

    specs = env_specs()
    rows = list_envs(args.root, probe=not args.no_probe)
    print(f"{'name':<18} {'state':<8} {'toolchain':<14} {'python':<8} {'backends':<10} path")
    for st in rows:
        if args.no_probe:
            state = "present" if st.ok else ("broken" if st.exists else "absent")
        else:
            state = "ok" if st.ok else ("broken" if st.exists else "absent")
        print(f"{st.name:<18} {state:<8} {st.toolchain_version or '-':<14} {st.python_version or '-':<8} "
              f"{','.join(specs[st.name].backends) or '-':<10} {st.path}")
        if not st.ok and st.exists and st.reason:
            print(f"{'':<18} {st.reason}")
    return EXIT_OK
