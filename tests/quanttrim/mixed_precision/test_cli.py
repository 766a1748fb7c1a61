"""The mixed-precision CLI: allocation from a sensitivity file, bad input, reproduction presets."""
from __future__ import annotations

import json

import pytest

from quanttrim.mixed_precision.cli import main
from quanttrim.mixed_precision.bitmap import load_bitmap
from quanttrim.mixed_precision.repro_config import MixedSet, ReproConfig


@pytest.fixture()
def sens_file(tmp_path):
    layers = [{"name": "conv1", "params": 144, "sensitivity": 5.0}, {"name": "b1", "params": 2304, "sensitivity": 1.0},
              {"name": "b2", "params": 2304, "sensitivity": 30.0}, {"name": "fc", "params": 640, "sensitivity": 4.0}]
    path = tmp_path / "sens.json"
    path.write_text(json.dumps({"layers": layers}))
    return path


def test_allocate_writes_a_bit_map_with_pinned_ends(sens_file, tmp_path, capsys):
    assert main(["allocate", str(sens_file), "--average-bits", "5", "--bits", "2,4,8", "--act-bits", "6",
                 "--out", str(tmp_path / "m.onnx")]) == 0
    bm = load_bitmap(tmp_path / "m.onnx")
    assert bm.weight_bits["conv1"] == 8 and bm.weight_bits["fc"] == 8 and bm.activation_bits == 6
    assert bm.size_bytes() <= (144 + 2304 * 2 + 640) * 5 / 8
    assert "Pareto frontier" in capsys.readouterr().out


def test_allocate_infeasible_budget_names_the_minimum(sens_file, capsys):
    assert main(["allocate", str(sens_file), "--budget-bytes", "10"]) == 2
    assert "smallest achievable size is 1,936.0 bytes" in capsys.readouterr().err


def test_allocate_unknown_bits_lists_the_valid_set(sens_file, capsys):
    assert main(["allocate", str(sens_file), "--average-bits", "5", "--bits", "4,12"]) == 2
    assert "valid: 2, 3, 4, 5, 6, 7, 8" in capsys.readouterr().err


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("reproduce", "sensitivity", "allocate"))


def test_quick_preset_is_small():
    q = ReproConfig.quick()
    assert q.preset == "quick" and q.train_limit <= 5_000 and q.test_limit <= 1_000
    assert ReproConfig.full().train_limit > q.train_limit


def test_mixed_set_budget_must_lie_in_its_bits():
    with pytest.raises(ValueError, match="outside the bit set"):
        MixedSet("4MP", (4, 8), 3.0)


def test_unknown_activation_bits_refused():
    with pytest.raises(ValueError, match="valid: 2, 3, 4, 5, 6, 7, 8"):
        ReproConfig(act_bits=(8, 1))


def test_registers_as_a_harness_subcommand(sens_file, capsys):
    import argparse

    from quanttrim.mixed_precision.cli import add_subparser

    ap = argparse.ArgumentParser()
    add_subparser(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["mixed-precision", "allocate", str(sens_file), "--average-bits", "6"])
    assert args.func(args) == 0
    assert "Pareto frontier" in capsys.readouterr().out


def test_sub8bit_rows_record_the_backends_refusal():
    pytest.importorskip("onnxruntime", reason="the ONNX Runtime backend needs onnxruntime")
    from backends.onnxruntime_backend import OnnxRuntimeBackend
    from quanttrim.mixed_precision.reproduce import _backend_refusal

    note = _backend_refusal(OnnxRuntimeBackend(), 2, 6)
    assert note.startswith("onnxruntime refuses w2a6") and "int8" in note and note.endswith("emulated")
