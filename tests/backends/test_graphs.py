"""Graphs users really have: opset-11 exports quantized per channel, or emulated in bf16 (backends/onnx_graph.py)."""
from __future__ import annotations

import numpy as np
import pytest

from backends import create_backend
from backends.base import CompileConfig, RuntimeConfig, UnsupportedRequest
from devices import load_device
from tests.backends.tiny_onnx import images, ort_reference, tiny_cnn

pytest.importorskip("onnxruntime")


def _compile_and_run(name: str, model, config: CompileConfig, tmp_path):
    backend = create_backend(name)
    compiled = backend.compile(model, load_device("cpu"), config, images(16, split_name="train"), tmp_path / "w")
    session = backend.load(compiled, load_device("cpu"), RuntimeConfig(threads=1))
    try:
        out = session.run({"input": images(4)})
    finally:
        session.close()
    return compiled, np.asarray(out[0])


def test_per_channel_int8_on_an_opset_11_graph_is_converted_and_runs(tmp_path):
    model = tiny_cnn(tmp_path / "op11.onnx", opset=11)
    compiled, out = _compile_and_run("onnxruntime", model, CompileConfig("int8", calibration="minmax"), tmp_path)
    assert compiled.metadata["opset_converted"] == "11 -> 13"
    assert np.corrcoef(out.ravel(), ort_reference(model, images(4)).ravel())[0, 1] > 0.99


def test_per_tensor_int8_on_an_opset_11_graph_is_not_converted(tmp_path):
    model = tiny_cnn(tmp_path / "op11.onnx", opset=11)
    compiled, _ = _compile_and_run("onnxruntime", model, CompileConfig("int8", calibration="minmax",
                                                                       per_channel=False), tmp_path)
    assert "opset_converted" not in compiled.metadata


def test_emulated_bf16_on_an_opset_11_graph_is_converted_and_runs(tmp_path):
    model = tiny_cnn(tmp_path / "op11.onnx", opset=11)
    compiled, out = _compile_and_run("emulated", model, CompileConfig("bf16"), tmp_path)
    assert compiled.metadata["opset_converted"] == "11 -> 13"
    assert "bf16 activations" in compiled.metadata["opset_converted_why"]
    assert out.shape == (4, 10)


def test_a_graph_the_converter_cannot_convert_is_refused_with_the_fix(tmp_path, monkeypatch):
    def broken(model, target):
        raise RuntimeError("No Adapter For Upsample")

    monkeypatch.setattr("onnx.version_converter.convert_version", broken)
    model = tiny_cnn(tmp_path / "op11.onnx", opset=11)
    with pytest.raises(UnsupportedRequest, match=r"opset >= 13; the model is opset 11 .*No Adapter For Upsample.*"
                                                 r"re-export the model with opset 13"):
        create_backend("onnxruntime").compile(model, load_device("cpu"), CompileConfig("int8", calibration="minmax"),
                                              images(16, split_name="train"), tmp_path / "w")
