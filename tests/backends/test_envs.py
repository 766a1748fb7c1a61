"""Per-backend environments: interpreter lookup, probing, creation guards and the `env` subcommand."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from harness.cli import env_cmd as env_cli
from backends.environments import ENV_ROOT_VARIABLE, create_env, env_python, env_root, find_python, get_spec
from backends.environments import interpreter_for, probe_env


def _fake_python(root: Path, name: str, body: str = "exit 0") -> Path:
    python = env_python(name, root)
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\n{body}\n")
    python.chmod(0o755)
    return python


def test_backend_without_env_runs_here(tmp_path):
    assert interpreter_for("onnxruntime", root=tmp_path) is None


def test_rknn_runs_in_its_env_when_it_exists(tmp_path):
    python = _fake_python(tmp_path, "rknn")
    assert interpreter_for("rknn", root=tmp_path) == str(python)


def test_rknn_without_env_runs_here_and_reports_unavailable(tmp_path):
    assert interpreter_for("rknn", root=tmp_path) is None


def test_optional_env_is_skipped_when_the_toolchain_imports_here(tmp_path, monkeypatch):
    _fake_python(tmp_path, "tvm")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    assert interpreter_for("tvm", root=tmp_path) is None


def test_optional_env_is_used_when_the_toolchain_is_missing_here(tmp_path, monkeypatch):
    python = _fake_python(tmp_path, "tvm")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert interpreter_for("tvm", root=tmp_path) == str(python)


def test_root_variable_overrides_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_ROOT_VARIABLE, str(tmp_path))
    assert env_root() == tmp_path


def test_default_root_is_the_user_cache(monkeypatch):
    monkeypatch.delenv(ENV_ROOT_VARIABLE, raising=False)
    assert env_root() == Path.home() / ".cache" / "quanttrim-harness" / "envs"


def test_unknown_env_lists_the_valid_ones():
    with pytest.raises(KeyError, match="rknn"):
        get_spec("nosuch")


def test_rknn_pins_keep_numpy_1_26_and_old_setuptools():
    reqs = get_spec("rknn").requirements
    assert "numpy==1.26.4" in reqs and "setuptools<81" in reqs and "torch==2.13.0" in reqs


def test_probe_of_missing_env_names_setup(tmp_path):
    status = probe_env("rknn", root=tmp_path)
    assert not status.ok and "python -m harness env setup rknn" in status.reason


def test_probe_of_env_whose_toolchain_fails_names_setup_force(tmp_path):
    _fake_python(tmp_path, "rknn", "echo 'ImportError: libfoo' >&2; exit 1")
    status = probe_env("rknn", root=tmp_path)
    assert not status.ok and "libfoo" in status.reason and "env setup rknn --force" in status.reason


def test_probe_of_working_env_reads_the_version(tmp_path):
    _fake_python(tmp_path, "rknn", "echo 3.11.7; echo '{\"version\": \"2.5.0\"}'")
    status = probe_env("rknn", root=tmp_path)
    assert status.ok and status.toolchain_version == "2.5.0" and status.python_version == "3.11.7"


def test_a_working_env_is_reused_not_rebuilt(tmp_path):
    python = _fake_python(tmp_path, "rknn", "echo 3.11.7; echo '{\"version\": \"2.5.0\"}'")
    lines: list[str] = []
    report = create_env("rknn", root=tmp_path, python=sys.executable, log=lines.append)
    assert python.exists() and report.status.ok
    assert any("already set up" in line for line in lines)
    assert not any(" -m venv " in line for line in lines)


def test_converter_env_needs_python_3_12():
    spec = get_spec("litert-converter")
    found = find_python(spec)
    if found is None:
        pytest.skip("no Python >= 3.12 on this host")
    assert found != sys.executable or sys.version_info[:2] >= (3, 12)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    env_cli.add_subparser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_setup_parses_root_and_force(tmp_path):
    args = _parse(["env", "setup", "rknn", "--root", str(tmp_path), "--force"])
    assert (args.name, args.root, args.force, args.func) == (["rknn"], str(tmp_path), True, env_cli._setup)


def test_cli_list_shows_every_env(tmp_path, capsys):
    args = _parse(["env", "list", "--root", str(tmp_path), "--no-probe"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("rknn", "tvm", "openvino", "litert-converter"))


def test_cli_setup_failure_is_an_exit_code_not_a_traceback(tmp_path, capsys):
    old = tmp_path / "python2"
    old.write_text("#!/bin/sh\necho 2 7\n")
    old.chmod(0o755)
    args = _parse(["env", "setup", "rknn", "--root", str(tmp_path), "--python", str(old)])
    assert args.func(args) == 1 and "does not fit" in capsys.readouterr().err
