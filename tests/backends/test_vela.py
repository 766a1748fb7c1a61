"""Vela adapter: command line, summary and placement parsing, estimate labelling, refusals, and the real compiler
(onnx2tf + vela + LiteRT reference kernels) where installed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.base import CompileConfig, UnsupportedRequest
from backends.vela_backend import VelaBackend, estimate_fields, parse_placement, read_summary, vela_command
from tests.backends.tiny_onnx import compile_tiny, run_batch

VELA_STDOUT = """\
CPU operators = 1 (2.0%)
NPU operators = 3 (98.0%)
   NPU: Sub = wa/normalize/Sub_output_0 (outputs [1, 28, 28, 1])
   NPU: Conv2D = wa/layer1/conv1 (outputs [1, 28, 28, 16])
   NPU: Conv2D = wa/layer1/conv2 (outputs [1, 28, 28, 16])
   CPU: Softmax = probs (outputs [1, 10])
"""
SUMMARY = {"system_config": "Ethos_U65_High_End", "memory_mode": "Dedicated_Sram_384KB", "core_clock": 1e9,
           "inference_time": 0.000247442, "inferences_per_second": 4041.35, "batch_size": 1.0}


def test_placement_counts_op_types_per_side():
    npu, cpu = parse_placement(VELA_STDOUT)
    assert (dict(npu), dict(cpu)) == ({"Sub": 1, "Conv2D": 2}, {"Softmax": 1})


def test_summary_csv_values_are_numbers_where_numeric(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("system_config,inference_time\nEthos_U65_High_End,0.000247442\n")
    assert read_summary(path) == {"system_config": "Ethos_U65_High_End", "inference_time": 0.000247442}


def test_estimate_is_labelled_and_in_milliseconds():
    fields = estimate_fields(SUMMARY, "ethos-u65-256")
    assert (fields["latency_kind"], fields["timing"], fields["external_timing"]["latency_ms_p50"]) == (
        "estimated", "none", pytest.approx(0.247442))


def test_estimate_note_names_the_configuration():
    note = estimate_fields(SUMMARY, "ethos-u65-256")["timing_note"]
    assert all(s in note for s in ("ethos-u65-256", "Ethos_U65_High_End", "Dedicated_Sram_384KB", "1000 MHz"))


def test_estimate_without_timing_fields_fails_loudly():
    with pytest.raises(RuntimeError, match="inference_time"):
        estimate_fields({"system_config": "x"}, "ethos-u55-128")


def test_system_config_brings_the_bundled_config_file():
    argv = vela_command(Path("vela"), Path("m.tflite"), "ethos-u65-256", "Ethos_U65_High_End", None, Path("o"))
    assert argv[argv.index("--config") + 1] == "Arm/vela.ini" and "--memory-mode" not in argv


def test_device_without_ethosu_accelerator_is_refused(tmp_path):
    with pytest.raises(UnsupportedRequest, match="ethosu_accelerator"):
        compile_tiny(VelaBackend(), "cpu", tmp_path, samples=4)


def test_float_precision_is_refused():
    with pytest.raises(UnsupportedRequest, match="int8"):
        VelaBackend().check_request(CompileConfig("fp32"))


@pytest.fixture(scope="module")
def compiled_tiny(tmp_path_factory):
    avail = VelaBackend.availability()
    if not avail.available:
        pytest.skip(f"vela: {avail.explain()}")
    return compile_tiny(VelaBackend(), "imx93", tmp_path_factory.mktemp("vela"))


def test_real_compile_gives_a_positive_estimate(compiled_tiny):
    _, _, compiled = compiled_tiny
    assert compiled.metadata["external_timing"]["fps"] > 0


def test_real_compile_records_npu_placement(compiled_tiny):
    _, _, compiled = compiled_tiny
    assert compiled.metadata["ops_on_npu"].get("Conv2D") == 2


def test_reference_kernel_session_returns_logits(compiled_tiny):
    model, device, compiled = compiled_tiny
    out = run_batch(VelaBackend(), compiled, device, model, 2)
    out = out[0] if isinstance(out, list) else out
    assert out.shape == (2, 10) and np.isfinite(out).all()
