"""Reproduction pipeline pieces on a one-step model: re-calibrated fine-tune init, run reuse, mixed export."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the reproduction trains with torch (the `train` extra)")

from quanttrim.mixed_precision.repro_config import ReproConfig  # noqa: E402
from quanttrim.mixed_precision.repro_training import calibrated_init, load_emulated, quanttrim_recipe  # noqa: E402
from quanttrim.mixed_precision.repro_training import train_run  # noqa: E402
from quanttrim.mixed_precision.reproduce import export_on_training_grid  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from quanttrim.data import load_dataset
    from quanttrim.recipes import get_recipe

    out = tmp_path_factory.mktemp("mp")
    cfg = ReproConfig.quick(dataset="fashion-mnist-sample", test_limit=32, threads=1)
    ckpt = train_run(cfg, "resnet20", 0.25, get_recipe("map", 1), 1, out / "fp32", 64)
    data = load_dataset("fashion-mnist-sample")
    return cfg, out, ckpt, data


def test_calibrated_init_takes_weight_ranges_from_the_current_weights(run):
    from quanttrim.checkpoint import load_checkpoint
    from quanttrim.observers import sample_quantiles
    from quanttrim.pruning import fold_factor
    from quanttrim.train import rebuild_model
    from quanttrim.wrap import weight_layers

    cfg, out, ckpt, data = run
    init = calibrated_init(ckpt, data.train_x[:32], out / "init.pt")
    model, _ = rebuild_model(load_checkpoint(init))
    for _, layer in weight_layers(model):
        f = fold_factor(layer)
        w = layer.weight.detach() * (f if f is not None else 1.0)
        _, hi = sample_quantiles(w, None, layer.qt_w.observer.p_hi, absolute=True, channel_axis=None,
                                 max_samples=10**6, generator=torch.Generator().manual_seed(0))
        assert float(layer.qt_w.observer.hi) == pytest.approx(float(hi), rel=1e-5)


def test_finished_runs_are_reused_only_with_the_same_settings(run):
    cfg, out, ckpt, data = run
    from quanttrim.recipes import get_recipe

    assert train_run(cfg, "resnet20", 0.25, get_recipe("map", 1), 1, out / "fp32", 64) == ckpt
    other = train_run(cfg, "resnet20", 0.25, get_recipe("map", 1, {"lr": "0.002"}), 1, out / "fp32", 64)
    assert other != ckpt and other.parent.name.startswith("fp32-")


def test_mixed_run_exports_on_its_trained_grid(run):
    from quanttrim.mixed_precision.repro_training import _torch_logits
    from quanttrim.onnx_eval import onnx_logits
    from quanttrim.wrap import context, weight_layers

    cfg, out, ckpt, data = run
    layers = [n for n, _ in weight_layers(load_emulated(ckpt))]
    bits = {n: (8 if i in (0, len(layers) - 1) else 2) for i, n in enumerate(layers)}
    ft = train_run(cfg, "resnet20", 0.25, quanttrim_recipe(1, 8), 1, out / "mp", 64, init_from=ckpt,
                   weight_bits=bits)
    model = load_emulated(ft)
    assert {l.qt_w.ctx.cfg.weight_bits for _, l in weight_layers(model)} == {2, 8}
    table = export_on_training_grid(model, out / "mp.onnx", data.test_x)
    assert table is not None and json.loads(table.read_text())["tensors"]
    ctx = context(model)
    ctx.cfg = __import__("dataclasses").replace(ctx.cfg, quantize_activations=False)  # weights only, as exported
    x = data.test_x[:16]
    np.testing.assert_allclose(onnx_logits(out / "mp.onnx", x, threads=1), _torch_logits(model, x), atol=1e-3)


def test_study_artifacts_come_from_the_one_model_object(tmp_path):
    from quanttrim.mixed_precision.reproduce import _artifact
    from tests.conftest import make_tiny_cnn

    path = make_tiny_cnn(tmp_path / "m.onnx")
    art = _artifact(path, "study-fp32", np.zeros((2, 1, 28, 28), np.float32), tmp_path / "m.calib.json")
    assert (art.name, art.input_name, tuple(art.input_shape)) == ("study-fp32", "input", (1, 28, 28))
    assert art.calibration_table == tmp_path / "m.calib.json"
