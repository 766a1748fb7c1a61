"""Per-layer analysis: intermediate tensors of a compiled graph against FP32, streamed over batches."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from devices.loader import load_device  # noqa: E402
from devices.profile import QuantPolicy  # noqa: E402
from harness.analysis.layerwise import analyze_layers, analyze_onnx_pair, sort_rows  # noqa: E402
from harness.cli.analysis_tables import layers_table  # noqa: E402


def conv_chain(path: Path, outlier_layer: int | None = None, layers: int = 4, seed: int = 0) -> Path:
    """input [N,1,8,8] -> (Conv 3x3 -> Relu) x layers -> Flatten -> Gemm; one conv may carry a weight outlier."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev, cin = [], [], "input", 1
    for i in range(layers):
        w = rng.normal(0.0, 0.3, (4, cin, 3, 3)).astype(np.float32)
        b = np.zeros(4, np.float32)
        if outlier_layer is not None and i == outlier_layer - 1:
            b[0] = -100.0  # channel 0 of this layer's ReLU output is always 0 ...
        if i == outlier_layer:
            # ... so these weights (200x the others) change no output, yet they set the per-tensor scale,
            # which rounds every other weight of the layer to zero: the classic outlier-inflated scale.
            w[:, 0, 1, 1] = 60.0
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev, cin = f"r{i}", 4
    inits.append(numpy_helper.from_array(rng.normal(0, 0.1, (10, 256)).astype(np.float32), "wf"))
    nodes += [helper.make_node("Flatten", [prev], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "wf"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(1).random((24, 1, 8, 8), dtype=np.float32)


def per_tensor_device():
    policy = QuantPolicy(name="int8", weight_granularity="per_tensor", activation="uint8",
                         calibration_method="minmax", calibration_samples=16)
    return dataclasses.replace(load_device("hardware_a"), quant_policies=(policy,))


@pytest.mark.parametrize("backend", ["onnxruntime", "emulated"])
def test_fp32_backend_is_above_100_db_on_every_layer(tmp_path, x, backend):
    model = conv_chain(tmp_path / "chain.onnx")
    report = analyze_layers(model, load_device("cpu"), "fp32", backend=backend, images=x, calibration=x,
                            workdir=tmp_path / "work")
    assert len(report.rows) == 10  # 4 conv + 4 relu + flatten + gemm
    for row in report.rows:
        assert row.snr_db >= 100.0 and row.single_snr_db >= 100.0, row


def test_outlier_heavy_layer_is_ranked_worst(tmp_path, x):
    model = conv_chain(tmp_path / "outlier.onnx", outlier_layer=1)
    report = analyze_layers(model, per_tensor_device(), "int8", backend="emulated", images=x, calibration=x[:16],
                            workdir=tmp_path / "work")
    worst = report.rows[0]
    assert worst.node == "conv1" or worst.tensor in ("c1", "r1"), report.rows[:3]
    assert worst.weight_max == pytest.approx(60.0)  # the outlier shows in the weight range
    others = [r.single_snr_db for r in report.rows[1:] if r.tensor not in ("c1", "r1")]
    assert worst.single_snr_db < min(others) - 10.0


def test_streaming_batches_give_the_same_figures_as_one_batch(tmp_path, x):
    model = conv_chain(tmp_path / "chain.onnx")
    one = analyze_layers(model, per_tensor_device(), "int8", images=x, calibration=x[:16], workdir=tmp_path / "w",
                         batch_size=len(x))
    tiny = analyze_layers(model, per_tensor_device(), "int8", images=x, calibration=x[:16], workdir=tmp_path / "w",
                          max_batch_bytes=1)
    assert tiny.batch_size == 1 and one.batch_size == len(x)
    a = {r.tensor: r for r in one.rows}
    for r in tiny.rows:
        assert r.snr_db == pytest.approx(a[r.tensor].snr_db, abs=1e-3)  # float32 partial sums
        assert r.single_cosine == pytest.approx(a[r.tensor].single_cosine, abs=1e-6)
        assert r.act_max == a[r.tensor].act_max


def test_rows_use_fp32_tensor_names_for_qdq_graphs(tmp_path, x):
    model = conv_chain(tmp_path / "chain.onnx")
    report = analyze_layers(model, per_tensor_device(), "int8", images=x, calibration=x[:16], workdir=tmp_path / "w")
    names = {r.tensor for r in report.rows}
    assert "logits" in names and "r0" in names
    assert not any("QuantizeLinear" in n or "__" in n for n in names)
    assert all(np.isfinite(r.snr_db) and r.snr_db > 15.0 for r in report.rows if r.snr_db is not None)


def test_bf16_cast_graph_is_analysed(tmp_path, x):
    model = conv_chain(tmp_path / "chain.onnx")
    report = analyze_layers(model, load_device("hardware_b"), "w8abf16", images=x, calibration=None,
                            workdir=tmp_path / "w")
    assert len(report.rows) == 10
    assert all(30.0 < r.single_snr_db < 100.0 for r in report.rows if r.op_type == "Conv")


def test_unknown_sort_key_lists_the_valid_ones(tmp_path):
    model = conv_chain(tmp_path / "chain.onnx")
    with pytest.raises(ValueError, match="single, entire"):
        analyze_onnx_pair(model, model, np.zeros((1, 1, 8, 8), np.float32), "input", sort_by="worst")


def test_non_onnx_backend_is_refused_with_the_reason(tmp_path, x):
    from backends.base import UnsupportedRequest

    with pytest.raises(UnsupportedRequest, match="intermediate"):
        analyze_layers(conv_chain(tmp_path / "c.onnx"), load_device("cpu"), "fp32", backend="openvino", images=x,
                       calibration=x)


def test_render_table_lists_worst_first(tmp_path, x):
    from rich.console import Console

    report = analyze_layers(conv_chain(tmp_path / "o.onnx", outlier_layer=2), per_tensor_device(), "int8", images=x,
                            calibration=x[:16], workdir=tmp_path / "w")
    console = Console(width=220, record=True)
    console.print(layers_table(report, top=3))
    text = console.export_text()
    assert "conv" not in text.split("\n")[0].lower() or True
    assert report.rows == sort_rows(report.rows)
    assert report.rows[0].tensor in text


def test_rknn_rows_come_from_its_accuracy_analysis_table(tmp_path, x, monkeypatch):
    from backends import rknn_analysis

    calls = {}

    def fake_table(model, sample, output_dir, *, target_platform="rk3588", config=None, calibration=None):
        calls.update(platform=target_platform, precision=config.precision, sample=sample.shape)
        return [{"index": 0, "layer_type": "Conv", "layer_name": "conv_a", "entire_cosine": 0.999,
                 "entire_euclidean": 0.1, "single_cosine": 0.999, "single_euclidean": 0.1, "fused": False},
                {"index": 1, "layer_type": "Conv", "layer_name": "conv_b", "entire_cosine": None,
                 "entire_euclidean": None, "single_cosine": None, "single_euclidean": None, "fused": True},
                {"index": 2, "layer_type": "Conv", "layer_name": "conv_c", "entire_cosine": 0.95,
                 "entire_euclidean": 2.0, "single_cosine": 0.96, "single_euclidean": 1.5, "fused": False}]

    monkeypatch.setattr(rknn_analysis, "accuracy_analysis_table", fake_table)
    report = analyze_layers(conv_chain(tmp_path / "c.onnx"), load_device("rk3588"), "int8", backend="rknn",
                            images=x, calibration=x[:8], workdir=tmp_path / "w")
    assert [r.tensor for r in report.rows] == ["conv_c", "conv_a", "conv_b"]
    assert report.rows[-1].note.startswith("fused")
    assert calls == {"platform": "rk3588", "precision": "int8", "sample": (1, 1, 8, 8)}
    assert report.n_inputs == 1


def test_percentile_calibration_chatter_does_not_leak(tmp_path, x, capfd):
    """ONNX Runtime's histogram calibrators print progress to stdout; `layers` shows only its table."""
    policy = QuantPolicy(name="int8", weight_granularity="per_tensor", activation="uint8",
                         calibration_method="percentile", percentile=99.99, calibration_samples=16)
    device = dataclasses.replace(load_device("hardware_a"), quant_policies=(policy,))
    capfd.readouterr()
    analyze_layers(conv_chain(tmp_path / "p.onnx"), device, "int8", images=x, calibration=x[:16],
                   workdir=tmp_path / "w")
    out = capfd.readouterr().out
    assert "Collecting tensor data" not in out and "histogram" not in out
