"""`python -m harness power`: the subcommand module on its own parser."""
from __future__ import annotations

import argparse

import pytest

from harness.cli import power_cmd as power_cli
def _parse(argv):
    parser = argparse.ArgumentParser()
    power_cli.add_subparser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["power", *argv])


def _hwmon(tmp_path, microwatts=4_200_000):
    (tmp_path / "hwmon0").mkdir()
    (tmp_path / "hwmon0" / "name").write_text("ina226\n")
    (tmp_path / "hwmon0" / "power1_input").write_text(f"{microwatts}\n")
    return tmp_path


def test_no_source_lists_each_refusal_and_exits_0(tmp_path, capsys):
    args = _parse(["--device", "cpu", "--option", f"rapl.root={tmp_path / 'x'}",
                   "--option", f"hwmon.root={tmp_path / 'y'}", "--option", "usb_meter.port="])
    assert args.func(args) == power_cli.EXIT_OK
    out = capsys.readouterr().out
    for name in ("rapl:", "hwmon:", "usb_meter:"):
        assert f"no  {name}" in out


def test_no_source_with_require_exits_1(tmp_path, capsys):
    args = _parse(["--device", "cpu", "--require", "--option", f"rapl.root={tmp_path / 'x'}",
                   "--option", f"hwmon.root={tmp_path / 'y'}", "--option", "usb_meter.port="])
    assert args.func(args) == power_cli.EXIT_NO_SOURCE


def test_working_source_is_marked_and_sampled(tmp_path, capsys):
    root = _hwmon(tmp_path)
    args = _parse(["--device", "cpu", "--sources", "hwmon", "--option", f"hwmon.root={root}",
                   "--seconds", "0.1", "--period-ms", "10"])
    assert args.func(args) == power_cli.EXIT_OK
    out = capsys.readouterr().out
    assert "USE hwmon" in out
    assert "average 4.200 W" in out


def test_malformed_option_is_a_usage_error():
    with pytest.raises(SystemExit):
        _parse(["--option", "hwmon-root"])
