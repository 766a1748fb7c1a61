"""CLI and registries: unknown names list the valid ones; --help documents the options."""
from __future__ import annotations

import subprocess
import sys

import pytest

from quanttrim.cli import main
from quanttrim.data import load_dataset
from quanttrim.models import build_model
from quanttrim.recipes import get_recipe
from quanttrim.registry import Registry, UnknownNameError


@pytest.mark.parametrize("argv, listed", [
    (["--model", "resnet21", "--dataset", "fashion-mnist-sample"], "resnet20"),
    (["--model", "resnet20", "--dataset", "mnist"], "fashion-mnist"),
    (["--model", "resnet20", "--dataset", "fashion-mnist-sample", "--recipe", "qat"], "quanttrim"),
])
def test_unknown_names_list_valid_ones(argv, listed, capsys, tmp_path) -> None:
    rc = main(["train", *argv, "--epochs", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown" in err and "valid:" in err and listed in err


def test_registry_errors() -> None:
    with pytest.raises(UnknownNameError, match="valid: .*resnet20"):
        build_model("nope", num_classes=2, in_channels=1, image_size=16)
    with pytest.raises(UnknownNameError, match="valid: .*digits"):
        load_dataset("nope")
    with pytest.raises(UnknownNameError, match="valid: .*map"):
        get_recipe("nope")
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)


def test_bad_override_and_missing_dataset_dir(capsys, tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown setting"):
        get_recipe("quanttrim", 4, {"prune.pclip": "0.9"})
    rc = main(["train", "--model", "resnet20", "--dataset", "cifar10", "--epochs", "1", "--out", str(tmp_path)])
    assert rc == 2 and "--data-dir" in capsys.readouterr().err


def test_corrupt_checkpoint_export_error(capsys, tmp_path) -> None:
    bad = tmp_path / "final.pt"
    bad.write_text("not a checkpoint")
    rc = main(["export", str(bad), "--out", str(tmp_path / "m.onnx")])
    assert rc == 2 and "not readable" in capsys.readouterr().err


def test_help_documents_options() -> None:
    out = subprocess.run([sys.executable, "-m", "quanttrim", "train", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for opt in ("--model", "--dataset", "--recipe", "--epochs", "--out", "--resume", "--set", "--seed"):
        assert opt in out
    out = subprocess.run([sys.executable, "-m", "quanttrim", "export", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--out" in out and "calib" in out


def test_recipe_scaling() -> None:
    r = get_recipe("quanttrim", 10)
    assert (r.quant.warmup, r.quant.ramp_end, r.quant.horizon, r.prune.every) == (1.0, 5.0, 2.0, 0.5)
    assert get_recipe("map").quant.enabled is False and get_recipe("map").prune.enabled is False
    for name in ("fp32", "qat-only", "rp-only", "qat+rp90", "qat+rp99"):
        r = get_recipe(name)
        assert r.optimizer == "sgd" and r.lr == 1e-3 and r.reference_epochs == 50
    assert get_recipe("qat+rp90").prune.p_clip == 0.90 and get_recipe("rp-only").quant.enabled is False
    assert get_recipe("quanttrim-vit").quant.alpha_max == 0.8
