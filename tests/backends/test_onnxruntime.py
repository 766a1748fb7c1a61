from __future__ import annotations

import json

import numpy as np
import pytest

from backends.base import CompileConfig, RuntimeConfig, UnsupportedRequest
from backends.onnxruntime_backend import OnnxRuntimeBackend, compute_ranges
from tests.backends.tiny_onnx import artifact
from devices import load_device
from harness.scoring import metrics
def _artifact(path, table=None):
    return artifact(path, "tiny", calibration_table=table)


def _outputs(backend, compiled, images):
    session = backend.load(compiled, load_device("cpu"), RuntimeConfig(threads=1))
    try:
        return np.concatenate([session.run({"input": images[i:i + 1]})[0] for i in range(len(images))])
    finally:
        session.close()


@pytest.fixture
def backend():
    return OnnxRuntimeBackend()


def test_fp32_is_the_unchanged_model(backend, tiny_model, tmp_path):
    compiled = backend.compile(_artifact(tiny_model), load_device("cpu"), CompileConfig("fp32"), None, tmp_path)
    assert compiled.path == tiny_model


def test_fp16_stays_close_to_fp32(backend, tiny_model, images, tmp_path):
    cpu = load_device("cpu")
    ref = _outputs(backend, backend.compile(_artifact(tiny_model), cpu, CompileConfig("fp32"), None, tmp_path), images)
    out = _outputs(backend, backend.compile(_artifact(tiny_model), cpu, CompileConfig("fp16"), None, tmp_path), images)
    assert metrics.snr_db(out, ref) > 40


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_builds_a_qdq_graph(backend, tiny_model, images, tmp_path, method):
    import onnx

    cfg = CompileConfig("int8", calibration=method, per_channel=False)
    compiled = backend.compile(_artifact(tiny_model), load_device("cpu"), cfg, images[:16], tmp_path)
    ops = {n.op_type for n in onnx.load(str(compiled.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert compiled.metadata["calibration_method"] == method


def test_static_int8_without_calibration_is_refused(backend, tiny_model, tmp_path):
    with pytest.raises(UnsupportedRequest, match="calibration set"):
        backend.compile(_artifact(tiny_model), load_device("cpu"), CompileConfig("int8"), None, tmp_path)


def test_compiled_artifacts_are_cached_by_content(backend, tiny_model, images, tmp_path):
    cfg = CompileConfig("int8")
    first = backend.compile(_artifact(tiny_model), load_device("cpu"), cfg, images[:8], tmp_path)
    second = backend.compile(_artifact(tiny_model), load_device("cpu"), cfg, images[:8], tmp_path)
    other_draw = backend.compile(_artifact(tiny_model), load_device("cpu"), cfg, images[8:16], tmp_path)
    assert not first.metadata["cached"] and second.metadata["cached"]
    assert second.path == first.path and other_draw.path != first.path


def test_entropy_calibration_is_not_minmax_in_disguise(tiny_model, images):
    minmax, _ = compute_ranges(tiny_model, "input", images, "minmax")
    entropy, _ = compute_ranges(tiny_model, "input", images, "entropy")
    hi_mm = float(np.ravel(minmax.data["r1"].range_value[1])[0])
    hi_en = float(np.ravel(entropy.data["r1"].range_value[1])[0])
    assert hi_en < hi_mm


def test_learned_calibration_uses_the_trainers_ranges(backend, tiny_model, images, tmp_path):
    import onnx
    from onnx import numpy_helper

    table = tmp_path / "tiny.calib.json"
    table.write_text(json.dumps({"format": "quanttrim-calibration/1", "activation_bits": 8,
                                 "tensors": {"r1": {"min": 0.0, "max": 2.55}}}))
    cfg = CompileConfig("int8", calibration="learned", per_channel=False)
    compiled = backend.compile(_artifact(tiny_model, table), load_device("cpu"), cfg, images[:8], tmp_path)
    model = onnx.load(str(compiled.path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "r1")
    assert float(inits[q.input[1]]) == pytest.approx(2.55 / 255, rel=1e-5)


def test_unsupported_precision_is_refused_not_changed(backend, tiny_model, tmp_path):
    with pytest.raises(UnsupportedRequest, match="does not support precision 'bf16'"):
        backend.compile(_artifact(tiny_model), load_device("cpu"), CompileConfig("bf16"), None, tmp_path)


def test_signed_symmetric_activations_stay_accurate(backend, tiny_model, images, tmp_path):
    cpu = load_device("cpu")
    ref = _outputs(backend, backend.compile(_artifact(tiny_model), cpu, CompileConfig("fp32"), None, tmp_path), images)
    cfg = CompileConfig("int8", activation_signed=True)
    out = _outputs(backend, backend.compile(_artifact(tiny_model), cpu, cfg, images[:32], tmp_path), images)
    assert metrics.snr_db(out, ref) > 20


def test_learned_calibration_leaves_the_network_output_calibrated_from_data(backend, tiny_model, images, tmp_path):
    """A learned p_hi range on the logits would clip them; the output keeps the MinMax range of the data."""
    import onnx
    from onnx import numpy_helper

    table = tmp_path / "tiny.calib.json"
    table.write_text(json.dumps({"format": "quanttrim-calibration/1", "activation_bits": 8,
                                 "tensors": {"r1": {"min": 0.0, "max": 2.55}, "logits": {"min": -0.01, "max": 0.01}}}))
    cfg = CompileConfig("int8", calibration="learned", per_channel=False)
    compiled = backend.compile(_artifact(tiny_model, table), load_device("cpu"), cfg, images[:8], tmp_path)
    model = onnx.load(str(compiled.path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    # ORT renames the quantized graph output's input to logits_QuantizeLinear_Input; its scale is logits_scale
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[1] == "logits_scale")
    assert float(inits[q.input[1]]) > 10 * 0.02 / 255  # far wider than the table's ±0.01


def test_dynamic_int8_quantizes_weights_stored_as_constant_nodes(backend, images, tmp_path):
    # paddle2onnx stores every weight as a Constant node; ORT's dynamic quantizer raised "Expected W1 to be an
    # initializer" on such a graph (PaddleOCR's text detector).
    from tests.backends.tiny_onnx import tiny_cnn

    model = tiny_cnn(tmp_path / "paddle_like.onnx", weights_as_constants=True)
    compiled = backend.compile(model, load_device("cpu"), CompileConfig("int8-dynamic"), None, tmp_path / "work")
    fp32 = backend.compile(model, load_device("cpu"), CompileConfig("fp32"), None, tmp_path / "work")
    snr = metrics.snr_db(_outputs(backend, compiled, images[:8]), _outputs(backend, fp32, images[:8]))
    assert snr > 20.0
