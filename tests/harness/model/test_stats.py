from __future__ import annotations

from harness.model.stats import model_stats, size_mb
from tests.conftest import make_tiny_cnn


def test_params_and_macs_of_a_known_cnn(tmp_path):
    path = make_tiny_cnn(tmp_path / "tiny.onnx")
    import onnx
    from onnx import numpy_helper

    params = sum(numpy_helper.to_array(i).size for i in onnx.load(str(path)).graph.initializer)
    stats = model_stats(path, {"input": (1, 1, 28, 28)})
    assert stats.params == params
    # conv1 28·28·8·9 + conv2 14·14·16·72 + fc 16·10 = 282,400 MACs; onnx-tool also counts bias, ReLU and pooling
    assert 282_400 <= stats.macs_per_inference <= 1.1 * 282_400


def test_unprofilable_model_gives_empty_fields_with_the_reason(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    stats = model_stats(bad, {"input": (1, 1, 28, 28)})
    assert stats.params is None and stats.macs_per_inference is None
    assert "could not profile" in stats.note


def test_size_of_a_folder_counts_every_file(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"x" * 500)
    assert size_mb(tmp_path) == 1500 / 1e6


def test_weights_stored_as_constant_nodes_are_counted_as_params(tmp_path):
    from tests.backends.tiny_onnx import tiny_cnn

    as_initializers = model_stats(tiny_cnn(tmp_path / "i.onnx").path, {"input": (1, 1, 28, 28)})
    as_constants = model_stats(tiny_cnn(tmp_path / "c.onnx", weights_as_constants=True).path,
                               {"input": (1, 1, 28, 28)})
    assert as_constants.params == as_initializers.params > 0
