"""QNN HTP adapter: provider options, the HTP profile parser, refusals, and the real emulator where installed."""
from __future__ import annotations

import numpy as np
import pytest

from backends.base import CompileConfig, UnsupportedRequest
from backends.qnn_backend import QnnBackend, cycles_summary, parse_profile, provider_options, write_cycles_table
from tests.backends.tiny_onnx import compile_tiny, run_batch

PROFILE_CSV = """\
Msg Timestamp,Message,Time,Unit of Measurement,Timing Source,Event Level,Event Identifier
0,FINALIZE,32894,US,BACKEND,ROOT,QNN (finalize) time
0,BACKEND,5700758,CYCLES,BACKEND,ROOT,Accelerator (execute) time (cycles)
0,NODE,1226,CYCLES,BACKEND,SUB-EVENT,Input OpId_2 (cycles)
0,NODE,99087,CYCLES,BACKEND,SUB-EVENT,/normalize/Sub:OpId_17 (cycles)
0,NODE,403737,CYCLES,BACKEND,SUB-EVENT,/layer1/layer1.0/conv1/Conv_token_7:OpId_40 (cycles)
"""


def test_profile_rows_are_node_cycles_plus_the_total():
    assert parse_profile(PROFILE_CSV) == [
        {"node": "<total>", "cycles": 5700758}, {"node": "Input OpId_2", "cycles": 1226},
        {"node": "/normalize/Sub", "cycles": 99087}, {"node": "/layer1/layer1.0/conv1/Conv_token_7", "cycles": 403737}]


def test_cycles_summary_names_total_and_costliest_node(tmp_path):
    path = write_cycles_table(parse_profile(PROFILE_CSV), tmp_path / "c.csv")
    summary = cycles_summary(path)
    assert (summary["qnn_emulated_cycles_total"], summary["qnn_costliest_node"]) == (
        5700758, "/layer1/layer1.0/conv1/Conv_token_7")


def test_provider_options_keep_graph_io_quantization_on_the_htp():
    opts = provider_options("SM8550", fp16=True)
    assert opts == {"backend_type": "htp", "soc_model": "SM8550", "offload_graph_io_quantization": "0",
                    "enable_htp_fp16_precision": "1"}


def test_device_without_soc_model_is_refused(tmp_path):
    with pytest.raises(UnsupportedRequest, match="qnn_soc_model"):
        compile_tiny(QnnBackend(), "cpu", tmp_path, samples=4)


def test_calibrations_are_those_of_the_ort_quantizer():
    with pytest.raises(UnsupportedRequest, match="kl"):
        QnnBackend().check_request(CompileConfig("int8", calibration="kl"))


def _compile_tiny_for_htp(tmp_path_factory, precision: str, folder: str):
    """(model, snapdragon_8gen2 profile, artifact) of the tiny CNN compiled at ``precision`` with 16 calibration
    images; skips where the QNN SDK cannot run here."""
    if not QnnBackend.availability().available or QnnBackend.availability().reason.startswith("runs in"):
        pytest.skip(f"qnn: {QnnBackend.availability().explain()}")
    return compile_tiny(QnnBackend(), "snapdragon_8gen2", tmp_path_factory.mktemp(folder), precision)


@pytest.fixture(scope="module")
def compiled_tiny(tmp_path_factory):
    return _compile_tiny_for_htp(tmp_path_factory, "int8", "qnn")


def test_int8_tiny_cnn_runs_entirely_on_the_htp(compiled_tiny):
    _, _, compiled = compiled_tiny
    assert (compiled.metadata["npu_op_share"], compiled.metadata["fallback_ops"]) == (1.0, [])


def test_emulated_cycles_are_kept_with_the_artifact(compiled_tiny):
    _, _, compiled = compiled_tiny
    assert compiled.metadata["qnn_emulated_cycles_total"] > 0


def test_session_returns_every_output_for_a_batch(compiled_tiny):
    model, device, compiled = compiled_tiny
    outs = run_batch(QnnBackend(), compiled, device, model, 3)
    assert len(outs) == 1 and outs[0].shape == (3, 10) and np.isfinite(outs[0]).all()


@pytest.fixture(scope="module")
def compiled_w4a16(tmp_path_factory):
    return _compile_tiny_for_htp(tmp_path_factory, "w4a16", "qnn4")


def test_w4a16_graph_holds_int4_weights_and_uint16_activations(compiled_w4a16):
    import onnx

    _, _, compiled = compiled_w4a16
    types = {i.data_type for i in onnx.load(compiled.metadata["qdq_graph"]).graph.initializer}
    assert {onnx.TensorProto.INT4, onnx.TensorProto.UINT16} <= types


def test_w4a16_tiny_cnn_runs_entirely_on_the_htp(compiled_w4a16):
    _, _, compiled = compiled_w4a16
    assert (compiled.metadata["npu_op_share"], compiled.metadata["fallback_ops"]) == (1.0, [])
