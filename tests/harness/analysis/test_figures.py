"""Figure elements checked from the matplotlib objects: labels, legend entries, marker fill per runtime."""
from __future__ import annotations

import json

import matplotlib.colors as mcolors
import numpy as np
import pytest

from harness.analysis import figures as plots
from harness.cli.main import main as cli_main
from harness.store.reader import load, load_store
from tests.harness.result_store_factory import GPU, NPU, RUN_A, make_store, manifest, tiny_cnn, write_run


@pytest.fixture()
def df(tmp_path):
    return load(make_store(tmp_path))


def _lines(fig, prefix):
    return {a.get_gid(): a for ax in fig.axes for a in ax.get_lines() if (a.get_gid() or "").startswith(prefix)}


def _legend_texts(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def _texts(fig, gid):
    return [t for ax in fig.axes for t in ax.texts if t.get_gid() == gid]


def test_power_throughput_axes_and_panels_per_model(df):
    fig = plots.power_throughput_figure(df)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().splitlines()[0] for ax in visible] == ["resnet20-fmnist", "unet"]
    assert {ax.get_xlabel() for ax in visible} == {"median throughput (FPS)"}
    assert {ax.get_ylabel() for ax in visible} == {"average peak power (W)"}


def test_power_throughput_legend_names_the_encoding(df):
    texts = _legend_texts(plots.power_throughput_figure(df))
    for entry in ("gpu_y", "npu_x", "fp16", "int8", "filled: device's default runtime",
                  "unfilled: other runtime (e.g. TensorRT)", "estimated power (faded, dashed whiskers)"):
        assert entry in texts


def test_marker_fill_follows_the_default_runtime(df):
    pts = _lines(plots.power_throughput_figure(df), "point|")
    default = pts["point|gpu_y|fp16|filled"]           # onnxruntime-cuda: gpu_y's first backend
    other = pts["point|gpu_y|fp16|unfilled|estimated"]  # tensorrt
    assert mcolors.same_color(default.get_markerfacecolor(), default.get_color())
    assert other.get_markerfacecolor() == "none"
    assert mcolors.same_color(pts["point|npu_x|int8|filled"].get_markerfacecolor(), pts["point|npu_x|int8|filled"].get_color())
    assert default.get_marker() == "s" and pts["point|npu_x|int8|filled"].get_marker() == "^"


def test_y_is_the_average_peak_and_whiskers_span_p5_to_p95(df):
    fig = plots.power_throughput_figure(df)
    pt = _lines(fig, "point|")["point|npu_x|int8|filled"]
    assert sorted(pt.get_ydata().tolist()) == [4.8, 5.0]  # power_peak_w_mean of j1, j2
    ax = fig.axes[0]
    segs = [c for c in ax.collections if c.get_gid() == "whisker|npu_x|int8"][0].get_segments()
    spans = sorted((float(s[0][1]), float(s[1][1])) for s in segs)
    assert spans == [(3.5, 4.9), (3.6, 5.1)]


def test_no_whisker_where_percentiles_were_not_recorded(tmp_path):
    write_run(tmp_path, "r", [dict(RUN_A[0], power_p5_w=None, power_p95_w=None)], manifest("r", [NPU]))
    fig = plots.power_throughput_figure(load(tmp_path))
    (coll,) = [c for c in fig.axes[0].collections if c.get_gid() == "whisker|npu_x|int8"]
    segs = [np.asarray(seg, float) for seg in coll.get_segments()]
    assert all(seg.size == 0 or np.isnan(seg).any() for seg in segs)  # nothing drawn, not a 0-length whisker


def test_estimated_power_is_drawn_differently(df):
    fig = plots.power_throughput_figure(df)
    est = _lines(fig, "point|")["point|gpu_y|fp16|unfilled|estimated"]
    real = _lines(fig, "point|")["point|gpu_y|fp16|filled"]
    assert est.get_alpha() < real.get_alpha()
    whisk = [c for ax in fig.axes for c in ax.collections if c.get_gid() == "whisker|gpu_y|fp16|estimated"][0]
    assert whisk.get_linestyle()[0][1] is not None  # a dash pattern, not solid


def test_missing_power_is_said_not_drawn_as_zero(df):
    fig = plots.power_throughput_figure(df)
    unet_ax = [ax for ax in fig.axes if ax.get_title() == "unet"][0]
    assert not [line for line in unet_ax.get_lines() if (line.get_gid() or "").startswith("point|")]
    (msg,) = _texts(fig, "no-power")
    assert "no power measured for unet" in msg.get_text() and "usb_meter" in msg.get_text()
    ys = np.concatenate([line.get_ydata() for line in _lines(fig, "point|").values()])
    assert (ys > 0).all()


def test_partly_missing_power_gets_a_footnote(tmp_path):
    no_power = dict(RUN_A[0], job_id="jx", power_avg_w=None, power_peak_w=None, power_peak_w_mean=None,
                    power_unavailable_reason="RAPL not readable")
    write_run(tmp_path, "r", [RUN_A[1], no_power], manifest("r", [NPU]))
    (note,) = _texts(plots.power_throughput_figure(load(tmp_path)), "no-power-note")
    assert "1 job(s) without power" in note.get_text() and "RAPL" in note.get_text()


def test_accuracy_throughput_arrows_from_map_to_quanttrim(df):
    fig = plots.accuracy_throughput_figure(df)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "top-1 accuracy" and ax.get_xlabel() == "median throughput (FPS)"
    arrows = {t.get_gid(): t for t in ax.texts if (t.get_gid() or "").startswith("recipe-arrow")}
    assert set(arrows) == {"recipe-arrow|npu_x|vendor_rt|int8", "recipe-arrow|gpu_y|onnxruntime-cuda|fp16"}
    a = arrows["recipe-arrow|npu_x|vendor_rt|int8"]
    assert a.xy == (510.0, 0.91) and a.xyann == (500.0, 0.90)
    assert any(t.startswith("MAP \u2192 Quant-Trim (same job)") for t in _legend_texts(fig))


def test_accuracy_throughput_logit_mse_uses_log_scale(df):
    fig = plots.accuracy_throughput_figure(df, metric="logit_mse")
    ax = [a for a in fig.axes if a.get_title() == "resnet20-fmnist"][0]
    assert ax.get_yscale() == "log" and "logit MSE" in ax.get_ylabel()


def test_latency_boxes_from_raw_files_and_percentiles_otherwise(df):
    fig = plots.latency_figure(df)
    boxes = {p.get_gid() for ax in fig.axes for p in ax.patches if p.get_gid()}
    assert "latency-box|vendor_rt|int8|MAP|filled" in boxes
    assert "latency-box|tensorrt|fp16|MAP|unfilled" in boxes
    unet_ax = [ax for ax in fig.axes if ax.get_title() == "unet on npu_x"][0]
    assert unet_ax.get_xticklabels()[0].get_text().endswith("*")  # recorded percentiles, no raw file
    assert any("no raw file" in t for t in _legend_texts(fig))
    assert unet_ax.get_ylabel() == "latency per batch (ms)"


def _write_logs(root, keys=("epoch", "loss", "val_acc", "lambda")):
    ep, loss, acc, lam = keys
    for recipe in ("map", "quanttrim"):
        for seed in (0, 1):
            path = root / f"{recipe}-seed{seed}.jsonl"
            lines = [json.dumps({"recipe": recipe, "seed": seed})]
            for e in range(6):
                lines.append(json.dumps({ep: e, loss: 2.0 / (e + 1) + 0.1 * seed, acc: 0.5 + 0.05 * e + 0.01 * seed,
                                         lam: 0.0 if recipe == "map" else min(1.0, e / 4)}))
            lines.append(json.dumps({"step": 99, "kind": "step", ep: 5, loss: 99.0}))  # step entries ignored
            path.write_text("\n".join(lines) + "\n")
    return root


def test_training_figure_lines_bands_and_lambda_axis(tmp_path):
    logs = [plots.read_training_log(p) for p in plots.find_training_logs([_write_logs(tmp_path)])]
    assert len(logs) == 4 and {lg.recipe for lg in logs} == {"map", "quanttrim"}
    fig = plots.training_figure(logs)
    gids = {a.get_gid() for ax in fig.axes for a in list(ax.get_lines()) + list(ax.collections) if a.get_gid()}
    assert {"train-line|val_acc|map", "train-line|val_acc|quanttrim", "seed-band|loss|quanttrim",
            "lambda-line"} <= gids
    labels = {ax.get_ylabel() for ax in fig.axes}
    assert {"val acc (%)", "loss", "\u03bb (blend factor)"} <= labels
    loss_line = _lines(fig, "train-line|loss|map")["train-line|loss|map"]
    assert loss_line.get_ydata()[-1] == pytest.approx(2.0 / 6 + 0.05)  # mean over seeds; step line ignored


def test_training_logs_with_other_key_names(tmp_path):
    logs = [plots.read_training_log(p) for p in plots.find_training_logs([_write_logs(tmp_path, ("epoch", "train_loss", "acc", "lam"))])]
    fig = plots.training_figure(logs)
    assert {"acc (%)", "train loss"} <= {ax.get_ylabel() for ax in fig.axes}


def test_training_logs_in_the_trainer_layout(tmp_path):
    """quanttrim.train writes OUT/log.jsonl: recipe and seed come from the run folder, nested stats are skipped."""
    for recipe, seed in (("map", 0), ("quanttrim", 0), ("quanttrim", 1)):
        run = tmp_path / f"resnet20-fmnist-{recipe}-s{seed}"
        run.mkdir()
        lines = [json.dumps({"epoch": e, "lambda": 0.0 if recipe == "map" else e / 3, "train_loss": 1.0 / e,
                             "train_acc": 0.8, "val_loss": 1.2 / e, "val_acc": 0.7 + 0.05 * e,
                             "weight_max_over_p99_median": 1.6 if recipe == "map" else 1.1,
                             "weights": {"fc": {"max_abs": 0.1}}, "activations": {"stem.2": {"lo": 0.0, "hi": 3.0}}})
                 for e in (1, 2, 3)]
        (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    logs = [plots.read_training_log(p) for p in plots.find_training_logs([tmp_path])]
    assert sorted((lg.recipe, lg.seed) for lg in logs) == [("map", "0"), ("quanttrim", "0"), ("quanttrim", "1")]
    assert "weights" not in logs[0].series
    fig = plots.training_figure(logs)
    labels = {ax.get_ylabel() for ax in fig.axes}
    assert {"val acc (%)", "val loss", "weight max|w| / p99|w| (median over layers)"} <= labels
    assert "Quant-Trim (n=2 seeds)" in _legend_texts(fig)


def test_distributions_weights_and_activations_per_group(tmp_path):
    specs = [plots.checkpoint_spec(tiny_cnn(tmp_path / "net-map.onnx", 0)),
             plots.checkpoint_spec(tiny_cnn(tmp_path / "net-quanttrim.onnx", 0, clip=0.4))]
    fig = plots.distributions_figure(specs, n_images=8)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert {"weights: stem", "weights: middle", "weights: head", "activations: stem", "activations: head"} <= set(titles)
    hists = _lines(fig, "hist|weights|middle")
    assert len(hists) == 2
    ax = [a for a in fig.axes if a.get_title() == "weights: middle"][0]
    assert ax.get_yscale() == "log"
    ratios = {t.get_text() for t in ax.get_legend().get_texts()}
    assert "1.00" in ratios  # the clipped checkpoint's max|w| equals its p99|w|
    assert {"MAP (FP32 baseline) (net-map)", "Quant-Trim (net-quanttrim)"} <= set(_legend_texts(fig))


def test_anonymous_initializers_are_grouped_by_node_name(tmp_path):
    spec = plots.checkpoint_spec(tiny_cnn(tmp_path / "t-map.onnx", 0, torch_style_names=True))
    fig = plots.distributions_figure([spec], n_images=4)
    titles = {ax.get_title() for ax in fig.axes if ax.get_visible()}
    assert {"weights: stem", "weights: layer1", "weights: head", "activations: layer1"} <= titles


def test_layer_groups_by_name_or_position():
    assert plots.layer_groups(["conv1.w", "layer1.0.w", "layer1.1.w", "layer2.0.w", "fc.w"]) == \
        ["stem", "layer1", "layer1", "layer2", "head"]
    assert plots.layer_groups([f"onnx::Conv_{i}" for i in range(8)]) == \
        ["stem", "early", "early", "middle", "middle", "late", "late", "head"]


def test_save_figure_writes_png_and_svg(df, tmp_path):
    paths = plots.save_figure(plots.power_throughput_figure(df), tmp_path / "out", "pt")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and b"<svg" in paths[1].read_bytes()[:500]


def test_no_data_is_a_clear_skip(tmp_path):
    write_run(tmp_path, "r", [RUN_A[5]], manifest("r", [GPU]))  # only a failed job
    written, skipped = plots.make_plots(load_store(tmp_path), ["power-throughput", "training"], tmp_path / "o")
    assert not written
    assert "no successful jobs" in skipped["power-throughput"]
    assert "--train-logs" in skipped["training"]


def test_plot_cli_writes_files(tmp_path, capsys):
    make_store(tmp_path / "results")
    rc = cli_main(["plot", str(tmp_path / "results"), "--kind", "accuracy-throughput", "--kind", "latency",
                   "--format", "png", "--filter", "device=npu_x", "--out", str(tmp_path / "figs")])
    assert rc == 0
    assert {p.name for p in (tmp_path / "figs").iterdir()} == {"accuracy-throughput.png", "latency.png"}


def test_distributions_default_to_one_model_pair_from_the_manifest(tmp_path):
    paths = {n: tiny_cnn(tmp_path / f"{n}.onnx", 0) for n in ("net-map", "net-quanttrim", "other-map")}
    man = manifest("r", [NPU])
    man["checkpoints"] = {n: {"path": str(p), "sha256": "x"} for n, p in paths.items()}
    write_run(tmp_path / "res", "r", RUN_A[:1], man)
    specs = plots.checkpoints_from_store(load_store(tmp_path / "res"))
    assert [s.path.name for s in specs] == ["net-map.onnx", "net-quanttrim.onnx"]


def test_weights_stored_as_constant_nodes_are_plotted(tmp_path):
    from tests.backends.tiny_onnx import tiny_cnn as constant_weight_cnn

    spec = plots.checkpoint_spec(constant_weight_cnn(tmp_path / "paddle-like.onnx", weights_as_constants=True).path)
    fig = plots.distributions_figure([spec], activations=False)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title().startswith("weights")]
