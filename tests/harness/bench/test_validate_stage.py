"""The worker's validation stage end to end: every output scored by role, non-finite outputs fail the job."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.bench.runner import BenchmarkOptions, run_benchmark
from harness.store.reader import read_samples
from tests.conftest import make_tiny_cnn

PLUGINS = ("tests.fakes.backends", "tests.fakes.faulty_backends")


def _options(tmp_path: Path, model: Path, **kw) -> BenchmarkOptions:
    base = dict(devices=("cpu",), checkpoints=(str(model),), backends=("onnxruntime",), precisions=("fp32",),
                fidelity_only=True, eval_samples=40, calib_samples=16, results_dir=tmp_path / "results",
                prefer_full_dataset=False, plugin_modules=PLUGINS, timeout_s=120)
    base.update(kw)
    return BenchmarkOptions(**base)


def _with_tail(path: Path, tail: str) -> Path:
    """The tiny CNN with its logits passed through ``tail`` ("Softmax": probabilities; "Sqrt": NaN for x < 0)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(make_tiny_cnn(path)))
    model.graph.node.append(helper.make_node(tail, ["logits"], ["y"], name=tail.lower()))
    out = model.graph.output[0]
    out.name = "y"
    onnx.save(model, str(path))
    return path


def _fake_device(tmp_path: Path, backend: str) -> str:
    path = tmp_path / f"{backend}.toml"
    path.write_text(f'name = "{backend}"\ndisplay_name = "fake"\nform_factor = "host_cpu"\n'
                    f'backends = ["{backend}"]\nprecisions = ["fp32"]\n')
    return str(path)


def _tiny_detector(path: Path, classes: int = 3) -> Path:
    """Conv 4x4/4 -> Sigmoid -> (N, 4+K, 49): YOLOv8-like rows of cx, cy, w, h (normalised) and K class scores,
    with its card beside it (<stem>.card.toml)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 2.0, (4 + classes, 1, 4, 4)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, 4 + classes, -1], dtype=np.int64), "shape")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], strides=[4, 4]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Reshape", ["s", "shape"], ["det"])]
    graph = helper.make_graph(nodes, "tiny_det",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("det", TensorProto.FLOAT, ["N", 4 + classes, 49])],
                              [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    path.with_name(path.stem + ".card.toml").write_text(
        '[[outputs]]\nname = "det"\nrole = "detection"\nclass_axis = 1\nbox_format = "cxcywh"\n'
        'detection_layout = "boxes4+scoresK"\n')
    return path


def test_fp32_against_itself_is_an_exact_match_with_null_snr(tmp_path, tiny_model):
    record = run_benchmark(_options(tmp_path, tiny_model)).records[0]
    assert record.status == "ok", record.error_message
    assert record.exact_match is True and record.snr_db is None
    assert record.outputs[0]["name"] == "logits" and record.outputs[0]["role"] == "logits"


def test_per_sample_vectors_are_saved_for_bootstrap(tmp_path, tiny_model):
    result = run_benchmark(_options(tmp_path, tiny_model))
    record = result.records[0]
    samples = read_samples(result.run_dir / "samples" / f"{record.job_id}.npz")
    assert samples["top1_agree"].dtype == bool and samples["top1_agree"].shape == (40,)
    assert samples["top1_agree"].all()
    assert samples["top1_correct"].mean() == pytest.approx(record.top1)


def test_nan_in_backend_outputs_fails_at_validate_with_k_of_n(tmp_path, tiny_model):
    device = _fake_device(tmp_path, "fake-nan")
    record = run_benchmark(_options(tmp_path, tiny_model, devices=(device,), backends=None)).records[0]
    assert (record.status, record.failed_stage) == ("failed", "validate")
    assert "1 of 1 outputs non-finite (backend): 'logits': 40 NaN, 0 Inf" in record.error_message
    assert record.top1 is None and record.outputs is None


def test_nan_in_the_fp32_reference_fails_the_job(tmp_path):
    model = _with_tail(tmp_path / "sqrt.onnx", "Sqrt")   # some logits are negative: Sqrt gives NaN
    record = run_benchmark(_options(tmp_path, model)).records[0]
    assert (record.status, record.failed_stage) == ("failed", "validate")
    assert "outputs non-finite (FP32 reference)" in record.error_message


def test_softmax_ended_classifier_gets_the_ece_of_its_logits(tmp_path):
    logits_model = make_tiny_cnn(tmp_path / "plain.onnx")
    probs_model = _with_tail(tmp_path / "soft.onnx", "Softmax")
    plain = run_benchmark(_options(tmp_path / "a", logits_model)).records[0]
    soft = run_benchmark(_options(tmp_path / "b", probs_model)).records[0]
    assert soft.primary_role == "probabilities" and soft.logit_mse is None and soft.probability_mse == 0.0
    assert soft.ece == pytest.approx(plain.ece, abs=1e-6)
    assert soft.brier == pytest.approx(plain.brier, abs=1e-6)


def test_detector_fp32_row_is_exact_with_map_one(tmp_path):
    record = run_benchmark(_options(tmp_path, _tiny_detector(tmp_path / "det.onnx"))).records[0]
    assert record.status == "ok", record.error_message
    assert record.primary_role == "detection" and record.exact_match is True
    assert record.map50 == 1.0 and record.map50_95 == 1.0 and record.reference_detections_per_image > 0


def test_detector_with_zeroed_class_scores_is_not_silently_fine(tmp_path):
    from harness.analysis.compare import compare_table
    from harness.store.reader import load

    model = _tiny_detector(tmp_path / "det.onnx")
    result = run_benchmark(_options(tmp_path, model, devices=(_fake_device(tmp_path, "fake-dead-scores"),),
                                    backends=None))
    record = result.records[0]
    assert record.status == "ok", record.error_message
    assert record.map50 == 0.0 and record.detections_per_image == 0.0
    assert record.worst_channel_snr_db == 0.0
    assert [c["channel"] for c in record.outputs[0]["worst_channels"]] == [4, 5, 6]
    note = compare_table(load(result.run_dir))["note"].iloc[0]
    assert record.dead_output_channels == 3
    assert "3 dead output channel(s)" in note


def _time_major_recognizer(path: Path, classes: int = 5) -> Path:
    """Conv over full height, 4-wide windows -> (N, C, 1, 7) -> (7, N, C): a CTC-like time-major output, with its
    card beside it (batch_axis 1, blank 0)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, 1.0, (classes, 1, 28, 4)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], strides=[4, 4]),
             helper.make_node("Squeeze", ["c", "axes"], ["s"]),
             helper.make_node("Transpose", ["s"], ["seq"], perm=[2, 0, 1])]
    graph = helper.make_graph(nodes, "tiny_ctc",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("seq", TensorProto.FLOAT, [7, "N", classes])],
                              [w, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    path.with_name(path.stem + ".card.toml").write_text(
        '[[outputs]]\nname = "seq"\nrole = "sequence"\nbatch_axis = 1\nclass_axis = 2\nblank_index = 0\n')
    return path


def test_time_major_sequence_output_counts_images_not_time_steps(tmp_path):
    result = run_benchmark(_options(tmp_path, _time_major_recognizer(tmp_path / "ctc.onnx")))
    record = result.records[0]
    assert record.status == "ok", record.error_message
    out = record.outputs[0]
    assert (record.eval_samples, out["samples"], out["shape"]) == (40, 40, [7, 40, 5])
    assert record.sequence_agreement == 1.0 and record.position_agreement == 1.0
    assert read_samples(result.run_dir / "samples" / f"{record.job_id}.npz")["sequence_agree"].shape == (40,)
