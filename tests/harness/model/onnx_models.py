"""Small ONNX models built in-process with onnx.helper: the graph shapes users really bring.

Every model's math is simple enough to compute in numpy, so tests can assert exact outputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph, path: Path, opset: int = OPSET) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def two_inputs_two_outputs(path: Path) -> Path:
    """image (N, 1, 4, 4) and scale (N, 1) -> "aux" = image * scale (N, 1, 4, 4) first, "logits" (N, 3) second.

    logits = mean over the image's pixels * scale, times [1, 2, 3] (a classifier head whose logits are NOT output 0).
    """
    w = numpy_helper.from_array(np.array([[1.0, 2.0, 3.0]], np.float32), "w")
    nodes = [
        helper.make_node("Unsqueeze", ["scale", "axes23"], ["scale4"]),
        helper.make_node("Mul", ["image", "scale4"], ["aux"]),
        helper.make_node("ReduceMean", ["aux"], ["pooled4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["pooled4", "shape_n1"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
    ]
    inits = [w, numpy_helper.from_array(np.array([2, 3], np.int64), "axes23"),
             numpy_helper.from_array(np.array([-1, 1], np.int64), "shape_n1")]
    graph = helper.make_graph(
        nodes, "two_in_two_out",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 4, 4]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["N", 1, 4, 4]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    return _save(graph, path)


def two_inputs_two_outputs_numpy(image: np.ndarray, scale: np.ndarray) -> list[np.ndarray]:
    aux = image * scale[:, :, None, None]
    logits = aux.mean(axis=(1, 2, 3))[:, None] * np.array([[1.0, 2.0, 3.0]], np.float32)
    return [aux, logits.astype(np.float32)]


def dynamic_hw_classifier(path: Path, batch: int | str = "N") -> Path:
    """input (batch, 2, H, W) with symbolic H and W -> logits (batch, 4): global average pool, then a 2x4 MatMul."""
    w = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(2, 4) / 8.0, "w")
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(
        nodes, "dynamic_hw",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 2, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4])], [w])
    return _save(graph, path)


def dynamic_hw_numpy(x: np.ndarray) -> np.ndarray:
    return (x.mean(axis=(2, 3)) @ (np.arange(8, dtype=np.float32).reshape(2, 4) / 8.0)).astype(np.float32)


def weights_listed_as_inputs(path: Path) -> Path:
    """An old exporter's graph: the weight "w" is an initializer AND the first graph input, the image second."""
    w = numpy_helper.from_array(np.full((1, 4), 0.5, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "weights_as_inputs",
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 1, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6  # IR < 4 semantics kept by old exporters: initializers listed as inputs
    onnx.save(model, str(path))
    return path


def with_external_data(path: Path, weight: float = 1.0) -> Path:
    """A one-MatMul model whose weight lives in an external file "<stem>.data" beside it."""
    w = numpy_helper.from_array(np.full((16, 4), weight, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"])], "external",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=f"{path.stem}.data", size_threshold=0)
    return path


def one_input_two_outputs(path: Path) -> Path:
    """input (N, 4) -> "features" = Relu(input) first, "logits" = input @ w (N, 3) second."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0, "w")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["features"]), helper.make_node("MatMul", ["input", "w"], ["logits"])],
        "one_in_two_out", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [w])
    return _save(graph, path)


def one_input_two_outputs_numpy(x: np.ndarray) -> list[np.ndarray]:
    return [np.maximum(x, 0), (x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0)).astype(np.float32)]
