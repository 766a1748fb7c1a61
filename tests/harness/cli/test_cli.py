"""`python -m harness` entry points and their answers to bad input."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli.main import main
from tests.conftest import make_tiny_cnn


def _run(args: list[str], tmp_path: Path) -> int:
    return main(["run", "--quick", "--bundled-data", "--results", str(tmp_path / "results"), *args])


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "devices" in out and "backends" in out


def test_devices_lists_every_profile(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "jetson_orin" in out and "hardware_b" in out


def test_backends_shows_availability(capsys):
    assert main(["backends"]) == 0
    assert "onnxruntime" in capsys.readouterr().out


def test_missing_checkpoint_is_one_clear_error(tmp_path, capsys):
    assert _run(["--checkpoint", str(tmp_path / "nope.onnx")], tmp_path) == 1
    assert "does not exist" in capsys.readouterr().err


def test_non_onnx_file_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a protobuf")
    assert _run(["--checkpoint", str(bad)], tmp_path) == 1
    assert "not a readable ONNX model" in capsys.readouterr().err


def test_input_shape_the_dataset_cannot_feed(tmp_path, capsys):
    model = make_tiny_cnn(tmp_path / "rgb.onnx", channels=3, size=32)
    assert _run(["--checkpoint", str(model)], tmp_path) == 1
    err = capsys.readouterr().err
    assert "[3, 32, 32]" in err and "[1, 28, 28]" in err


def test_unknown_device_lists_valid_ones(tmp_path, tiny_model, capsys):
    assert _run(["--checkpoint", str(tiny_model), "--device", "pixel9"], tmp_path) == 1
    err = capsys.readouterr().err
    assert "unknown device 'pixel9'; valid: " in err and " cpu, " in err


def test_unknown_backend_lists_valid_ones(tmp_path, tiny_model, capsys):
    assert _run(["--checkpoint", str(tiny_model), "--backends", "coreml"], tmp_path) == 1
    assert "unknown backend 'coreml'; valid:" in capsys.readouterr().err


def test_a_mistyped_backend_suggests_the_registered_one(tmp_path, tiny_model, capsys):
    assert _run(["--checkpoint", str(tiny_model), "--backends", "onnxrt"], tmp_path) == 1
    assert "unknown backend 'onnxrt'; did you mean 'onnxruntime'? valid:" in capsys.readouterr().err


def test_unknown_precision_lists_valid_ones(tmp_path, tiny_model, capsys):
    assert _run(["--checkpoint", str(tiny_model), "--precisions", "int9"], tmp_path) == 1
    assert "unknown precision 'int9'" in capsys.readouterr().err


def test_unwritable_results_directory(tmp_path, tiny_model, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["run", "--quick", "--bundled-data", "--checkpoint", str(tiny_model), "--results", str(blocker / "r")])
    assert code == 1
    assert "not writable" in capsys.readouterr().err


def test_errors_leave_written_records_intact(tmp_path, tiny_model):
    args = ["--checkpoint", str(tiny_model), "--backends", "onnxruntime", "--precisions", "fp32", "--run-id", "r1"]
    assert _run(args, tmp_path) == 0
    records = tmp_path / "results" / "r1" / "records.jsonl"
    before = records.read_text()
    assert _run(["--checkpoint", str(tmp_path / "gone.onnx"), "--resume", "r1"], tmp_path) == 1
    assert records.read_text() == before


def test_a_missing_plugin_module_is_one_clear_line(tmp_path, tiny_model, capsys):
    assert _run(["--checkpoint", str(tiny_model), "--plugin", "no_such_vendor.adapter"], tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --plugin no_such_vendor.adapter: cannot import it (No module named 'no_such_vendor')")
    assert len(err.strip().splitlines()) == 1


def test_a_run_id_with_a_path_in_it_is_one_clear_line(tmp_path, tiny_model, capsys):
    assert _run(["--checkpoint", str(tiny_model), "--run-id", "../outside"], tmp_path) == 1
    assert "run id '../outside' is not valid" in capsys.readouterr().err
    assert not (tmp_path / "outside").exists()


def test_the_resume_command_repeats_the_options_with_resume_and_an_absolute_results(tmp_path):
    from harness.cli.main import resume_command

    argv = ["run", "--quick", "--run-id", "r7", "--results=rel", "--backends", "onnxruntime", "--checkpoint",
            "m.onnx", "--device=cpu,my/dev.toml"]
    assert resume_command(argv, "r7", tmp_path) == (
        f"python -m harness run --quick --backends onnxruntime --checkpoint {Path.cwd() / 'm.onnx'} "
        f"--device=cpu,{Path.cwd() / 'my/dev.toml'} --resume r7 --results {tmp_path}")
