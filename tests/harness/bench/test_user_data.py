"""`run --data`: the user's images through the real worker, with the calibration split and the card recorded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from harness.bench.runner import BenchmarkOptions, run_benchmark


def _folder(root: Path, n_per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("0", "3"):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_run_on_a_folder_records_split_card_and_labels(tmp_path, tiny_model):
    data = _folder(tmp_path / "images")
    options = BenchmarkOptions(devices=("cpu",), checkpoints=(str(tiny_model),), backends=("onnxruntime",),
                               precisions=("fp32", "int8"), fidelity_only=True, calib_samples=4,
                               results_dir=tmp_path / "results", timeout_s=120, data_path=data)
    assumed: list[str] = []
    result = run_benchmark(options, info=assumed.append)
    fp32 = next(r for r in result.records if r.precision == "fp32")
    int8 = next(r for r in result.records if r.precision == "int8")
    assert fp32.status == "ok" and int8.status == "ok", (fp32.error_message, int8.error_message)
    assert fp32.eval_samples == 8 and int8.calibration_samples == 4          # 12 images: 4 calibrate, 8 evaluate
    assert fp32.logit_mse == 0.0 and fp32.top1 is not None
    assert str(data) in fp32.eval_source
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    card = manifest["model_cards"]["tiny"]
    assert card["inputs"][0]["size"] == [28, 28] and card["inputs"][0]["colour"] == "gray"
    assert any("seed 0" in n and "disjoint" in n for n in manifest["data"]["notes"]["tiny"])
    assert len(assumed) == 1 and "assumed" in assumed[0]
    assert any("labels from 2 class sub-folders" in n for n in int8.extra["data_notes"])
    assert (result.run_dir / "cards" / "tiny.card.toml").read_text().startswith("# assumed: input input")


def test_cli_paths_are_absolute_so_another_working_directory_works(tmp_path, tiny_model, monkeypatch):
    from harness.cli.main import main

    _folder(tmp_path / "work" / "images", n_per_class=2)
    (tmp_path / "work" / "tiny.onnx").write_bytes(Path(tiny_model).read_bytes())
    monkeypatch.chdir(tmp_path / "work")
    code = main(["run", "--checkpoint", "tiny.onnx", "--data", "images", "--backends", "onnxruntime",
                 "--precisions", "fp32", "--fidelity-only", "--results", str(tmp_path / "results"),
                 "--run-id", "r1"])
    assert code == 0
    manifest = json.loads((tmp_path / "results" / "r1" / "manifest.json").read_text())
    assert manifest["data"]["path"] == str(tmp_path / "work" / "images")
    assert manifest["checkpoints"]["tiny"]["path"] == str(tmp_path / "work" / "tiny.onnx")


def test_layers_takes_the_users_data(tmp_path, tiny_model, capsys):
    from harness.cli.main import main

    data = _folder(tmp_path / "images", n_per_class=3)
    code = main(["layers", "--checkpoint", str(tiny_model), "--data", str(data), "--device", "cpu",
                 "--precision", "int8", "--backend", "onnxruntime", "--inputs", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 inputs" in out and "calibration: 3 of 6 samples" in out


def test_calib_sensitivity_refuses_unlabelled_data_instead_of_inventing_labels(tmp_path, tiny_model, capsys):
    from harness.cli.main import main

    data = tmp_path / "flat"
    data.mkdir()
    for i in range(4):
        Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(data / f"{i}.png")
    code = main(["calib-sensitivity", "--checkpoint", str(tiny_model), "--data", str(data), "--device", "cpu",
                 "--sizes", "2", "--seeds", "0", "--sources", "train"])
    assert code == 2
    assert f"scores top-1 against labels and {data} has none" in capsys.readouterr().err
