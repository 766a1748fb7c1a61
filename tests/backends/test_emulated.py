"""The `emulated` backend: device quantization policies built as ONNX graphs and run on the CPU."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from backends import create_backend
from backends.base import CompileConfig, ModelArtifact, RuntimeConfig, UnsupportedRequest
from tests.backends.tiny_onnx import artifact
from devices.loader import load_device, profile_from_dict
from devices.profile import ProfileError, QuantPolicy

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def small_model(path: Path, extra_op: str | None = None, seed: int = 0) -> ModelArtifact:
    """Conv-Relu-Conv-[extra_op]-Add(skip)-Flatten-Gemm on [N, 1, 8, 8] -> [N, 10]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in [
        (rng.normal(size=(4, 1, 3, 3)), "w1"), (rng.normal(size=(4,)), "b1"),
        (rng.normal(size=(4, 4, 3, 3)) * 0.3, "w2"), (rng.normal(size=(10, 256)) * 0.1, "wf"),
        (rng.normal(size=(10,)), "bf")]]
    mid = "c2"
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2")]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["c2"], ["e2"], name="extra"))
        mid = "e2"
    nodes += [helper.make_node("Add", [mid, "r1"], ["a2"], name="add"),
              helper.make_node("Flatten", ["a2"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return artifact(path)


def device_with(policy: QuantPolicy):
    return dataclasses.replace(load_device("hardware_a"), quant_policies=(policy,), precisions=(policy.name,))


@pytest.fixture
def calib() -> np.ndarray:
    return np.random.default_rng(1).random((16, 1, 8, 8), dtype=np.float32)


def run_emulated(model: ModelArtifact, policy: QuantPolicy, images: np.ndarray, workdir: Path, x: np.ndarray,
                 **config):
    backend = create_backend("emulated")
    device = device_with(policy)
    compiled = backend.compile(model, device, CompileConfig(precision=policy.name, **config), images, workdir)
    session = backend.load(compiled, device, RuntimeConfig(threads=1))
    try:
        return compiled, session.run({"input": x})[0]
    finally:
        session.close()


def test_per_tensor_symmetric_int8_reproduces_onnxruntime_quantizer(tmp_path, calib):
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    from backends.onnxruntime_backend import CalibrationReader

    model = small_model(tmp_path / "m.onnx")
    policy = QuantPolicy(name="int8", weight_bits=8, weight_granularity="per_tensor", activation="int8",
                         activation_symmetric=True, calibration_method="minmax", calibration_samples=16)
    x = np.random.default_rng(2).random((8, 1, 8, 8), dtype=np.float32)
    _, got = run_emulated(model, policy, calib, tmp_path / "work", x)

    quant_pre_process(str(model.path), str(tmp_path / "pre.onnx"))
    quantize_static(str(tmp_path / "pre.onnx"), str(tmp_path / "ort.onnx"), CalibrationReader("input", calib),
                    quant_format=QuantFormat.QDQ, per_channel=False, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": True})
    want = ort.InferenceSession(str(tmp_path / "ort.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_array_equal(got, want)


def _bf16_cases() -> np.ndarray:
    rng = np.random.default_rng(3)
    # Exact ties (low 16 bits = 0x8000) with even and odd kept bits, plus ordinary values and edge cases.
    ties = (rng.integers(0x3F800000, 0x40800000, 64, dtype=np.uint32) & 0xFFFF0000) | 0x8000
    near = (rng.integers(0x3F800000, 0x40800000, 64, dtype=np.uint32) & 0xFFFF0000) | \
        rng.integers(0x7FF0, 0x8010, 64, dtype=np.uint32)
    special = np.array([0.0, -0.0, 1e-40, -3.4e38, 3.3e38, np.inf, -np.inf], dtype=np.float32)
    values = np.concatenate([ties.view(np.float32), near.view(np.float32), rng.normal(size=64).astype(np.float32) * 100,
                             special])
    return values.astype(np.float32).reshape(1, 1, 1, -1)


def _numpy_bf16(values: np.ndarray) -> tuple[np.ndarray, str]:
    try:
        import ml_dtypes
    except ImportError:
        from backends.emulated_backend import round_to_bf16

        return round_to_bf16(values), "bit trick (ml_dtypes not installed)"
    return values.astype(ml_dtypes.bfloat16).astype(np.float32), "ml_dtypes"


def identity_model(path: Path, width: int) -> ModelArtifact:
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["input"], ["logits"], name="id")
    graph = helper.make_graph([node], "id", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 1, width])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, 1, width])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return artifact(path)


def test_bf16_activation_rounding_matches_numpy_bfloat16(tmp_path):
    values = _bf16_cases()
    model = identity_model(tmp_path / "id.onnx", values.shape[-1])
    policy = QuantPolicy(name="bf16", weight_bits=None, weight_float="bf16", activation="bf16",
                         calibration_method="none")
    _, got = run_emulated(model, policy, None, tmp_path / "work", values)
    want, how = _numpy_bf16(values)
    np.testing.assert_array_equal(got, want, err_msg=f"compared with {how}")


def test_bit_trick_bf16_matches_numpy_bfloat16():
    from backends.emulated_backend import round_to_bf16

    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed (it ships with onnx/jax)")
    values = np.concatenate([_bf16_cases().ravel(), np.array([np.nan], dtype=np.float32)])
    want = values.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(round_to_bf16(values), want)


def test_unquantizable_operator_becomes_fp32_island(tmp_path, calib):
    model = small_model(tmp_path / "erf.onnx", extra_op="Erf")
    policy = QuantPolicy(name="int8", calibration_samples=16)
    x = np.random.default_rng(2).random((4, 1, 8, 8), dtype=np.float32)
    compiled, out = run_emulated(model, policy, calib, tmp_path / "work", x)
    assert out.shape == (4, 10) and np.isfinite(out).all()
    islands = compiled.metadata["fp32_islands"]
    assert [i["op_type"] for i in islands] == ["Erf"]
    assert "no quantized kernel" in islands[0]["reason"]


def test_policy_fallback_ops_are_recorded_as_host_islands(tmp_path, calib):
    model = small_model(tmp_path / "m.onnx")
    policy = QuantPolicy(name="int8", calibration_samples=16, fallback_ops=("Add",))
    compiled, _ = run_emulated(model, policy, calib, tmp_path / "work", calib[:2])
    assert compiled.metadata["fp32_island_ops"] == ["Add"]
    assert "fallback" in compiled.metadata["fp32_islands"][0]["reason"]


def test_int4_weights_sit_on_the_4_bit_grid(tmp_path, calib):
    from onnx import numpy_helper

    model = small_model(tmp_path / "m.onnx")
    policy = QuantPolicy(name="w4a8", weight_bits=4, calibration_samples=16)
    compiled, out = run_emulated(model, policy, calib, tmp_path / "work", calib[:2])
    assert compiled.metadata["weights_requantized_to_bits"] == 3
    graph = onnx.load(str(compiled.path)).graph
    weights = [numpy_helper.to_array(i) for i in graph.initializer if i.name.startswith("w") and
               i.name.endswith("_quantized")]
    assert weights and all(np.abs(w).max() <= 7 for w in weights)
    assert np.isfinite(out).all()


def test_every_calibration_method_builds_a_close_graph(tmp_path, calib):
    from harness.scoring.metrics import snr_db

    model = small_model(tmp_path / "m.onnx")
    x = calib[:8]
    ref = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    for method in ("max", "percentile", "mse"):
        policy = QuantPolicy(name="int8", calibration_method=method, percentile=99.9, calibration_samples=16)
        compiled, out = run_emulated(model, policy, calib, tmp_path / f"work-{method}", x)
        assert compiled.metadata["calibration_method"] in ("minmax", "percentile", "mse")
        assert snr_db(out, ref) > 15.0, method


def test_weight_only_bf16_activation_policy_runs(tmp_path, calib):
    model = small_model(tmp_path / "m.onnx")
    policy = QuantPolicy(name="w8abf16", weight_bits=8, activation="bf16", calibration_method="none")
    compiled, out = run_emulated(model, policy, None, tmp_path / "work", calib[:2])
    assert compiled.metadata["weights_fake_quantized"] == 3
    assert compiled.metadata["activation_cast_pairs"] > 0


def test_records_are_marked_emulated(tmp_path, calib):
    from backends.emulated_backend import TIMING_NOTE

    backend = create_backend("emulated")
    assert backend.capabilities().simulated is True
    compiled, _ = run_emulated(small_model(tmp_path / "m.onnx"), QuantPolicy(name="int8", calibration_samples=4),
                               calib, tmp_path / "work", calib[:1])
    assert compiled.metadata["timing_note"] == TIMING_NOTE and compiled.metadata["emulated"] is True
    assert compiled.metadata["calibration_samples_used"] == 4


@pytest.mark.parametrize("key,value,expect", [
    ("calibration_method", "magic", "percentile"),
    ("name", "int9000", "fp32"),
    ("activation", "int3", "bf16"),
])
def test_bad_policy_lists_the_valid_choices(key, value, expect):
    data = load_device("hardware_a").to_dict()
    data.pop("probed")
    data["quant_policies"] = [{"name": "int8", key: value}]
    with pytest.raises(ProfileError, match=expect):
        profile_from_dict(data, "test profile")


def test_unknown_precision_for_a_device_lists_its_policies(tmp_path, calib):
    backend = create_backend("emulated")
    with pytest.raises(UnsupportedRequest, match="w8abf16"):
        backend.compile(small_model(tmp_path / "m.onnx"), load_device("hardware_b"), CompileConfig(precision="int8"),
                        calib, tmp_path / "work")


def test_unknown_calibration_override_lists_the_valid_ones(tmp_path, calib):
    from backends.emulated_backend import check_policy

    with pytest.raises(UnsupportedRequest, match="entropy"):
        check_policy(QuantPolicy(name="int8"), calibration_override="guess")


def test_every_bundled_device_policy_is_emulatable():
    from backends.emulated_backend import check_policy
    from devices.loader import load_all_devices

    policies = [(d.name, p) for d in load_all_devices() for p in d.quant_policies]
    assert len(policies) >= 6
    for _, policy in policies:
        check_policy(policy)


def test_float_outputs_policy_leaves_the_logits_unquantized(tmp_path, calib):
    model = small_model(tmp_path / "m.onnx")
    compiled, _ = run_emulated(model, QuantPolicy(name="int8", calibration_samples=16, output_quantized=False),
                               calib, tmp_path / "work", calib[:2])
    assert compiled.metadata["float_outputs"] == ["logits"]
    graph = onnx.load(str(compiled.path)).graph
    producer = next(n for n in graph.node if "logits" in n.output)
    assert producer.op_type == "Gemm"


def test_a_request_of_the_other_granularity_is_served_the_policys_cached_artifact(tmp_path, calib):
    # The build emulates the policy's per-tensor weights whatever the request says (request_not_applied), so a
    # per-channel study gets the per-tensor study's artifact instead of building the same one again.
    model, policy = small_model(tmp_path / "m.onnx"), QuantPolicy(name="int8", weight_granularity="per_tensor")
    first, _ = run_emulated(model, policy, calib, tmp_path / "work", calib[:1], per_channel=False)
    second, _ = run_emulated(model, policy, calib, tmp_path / "work", calib[:1], per_channel=True)
    assert (second.path, second.metadata["cached"]) == (first.path, True)
