"""What a .tflite model really is: its precision read from its tensor types, and whether LiteRT can run it.

A record's precision label must describe the artifact that ran, not the request. :func:`inspect_tflite` reads
the model with LiteRT's interpreter: activation types (the outputs of its operators), weight types (constant
operator inputs) and I/O types, then invokes it once on zeros so a model LiteRT cannot execute (an fp16 graph
with an operator its kernels lack) is refused with LiteRT's own message instead of being timed.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import UnsupportedRequest

#: Which artifact precisions honour a requested precision.
ACCEPTS = {"fp32": ("fp32",), "fp16": ("fp16", "fp16-weights"), "int8": ("int8",)}

_DESCRIPTIONS = {
    "fp32": "fp32 weights and activations",
    "fp16": "fp16 weights and activations (float16 kernels)",
    "fp16-weights": "fp16 weights dequantized to fp32 at load; fp32 activations",
    "int8": "full INT8 (int8 weights and activations)",
    "int16x8": "int16 activations with int8 weights",
    "int8-dynamic": "int8 weights with fp32 activations (dynamic-range quantization)",
}


def _dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def classify(activations: Counter, weights: Counter) -> str:
    """The artifact precision from activation and weight dtype counts (numpy names)."""
    if activations["int8"] or activations["uint8"]:
        return "int16x8" if activations["int16"] else "int8"
    if activations["int16"]:
        return "int16x8"
    if activations["float16"]:
        return "fp16"
    if weights["int8"] or weights["uint8"]:
        return "int8-dynamic"
    if weights["float16"]:
        return "fp16-weights"
    return "fp32"


def inspect_tflite(path: Path | str, invoke: bool = True) -> dict[str, Any]:
    """Facts about a .tflite: ``artifact_precision``, its description, I/O dtypes, dtype counts.

    Raises UnsupportedRequest when LiteRT cannot load the model or run it once (``invoke``), quoting LiteRT.
    """
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
        ops = interp._get_ops_details()  # the only API listing operator inputs/outputs (used read-only)
        tensors = {t["index"]: t for t in interp.get_tensor_details()}
        ins, outs = interp.get_input_details(), interp.get_output_details()
        produced = {i for op in ops for i in op["outputs"]}
        boundary = {"QUANTIZE", "DEQUANTIZE"}
        activations = Counter(_dtype_name(tensors[i]["dtype"]) for op in ops if op["op_name"] not in boundary
                              for i in op["outputs"] if i in tensors)
        graph_inputs = {t["index"] for t in ins}
        weights = Counter(_dtype_name(tensors[i]["dtype"]) for op in ops for i in op["inputs"]
                          if i >= 0 and i in tensors and i not in produced and i not in graph_inputs)
        precision = classify(activations, weights)
        if invoke:
            for t in ins:
                interp.set_tensor(t["index"], np.zeros(t["shape"], dtype=t["dtype"]))
            interp.invoke()
    except UnsupportedRequest:
        raise
    except Exception as exc:  # LiteRT raises RuntimeError/ValueError with the failing operator in the text
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise UnsupportedRequest(f"LiteRT cannot run {Path(path).name}: {first}") from None
    signed = {"int8": True, "uint8": False}
    kind = next((k for k in ("int8", "uint8") if activations[k]), None)
    return {
        **({"activation_signed": signed[kind]} if kind else {}),
        "artifact_precision": precision,
        "artifact_numerics": _DESCRIPTIONS[precision],
        "tflite_input_dtype": _dtype_name(ins[0]["dtype"]),
        "tflite_output_dtype": _dtype_name(outs[0]["dtype"]),
        "tflite_activation_dtypes": dict(sorted(activations.items())),
        "tflite_weight_dtypes": dict(sorted(weights.items())),
    }


def check_artifact_precision(requested: str, facts: dict[str, Any], path: Path | str) -> None:
    """Refuse when the .tflite's real precision is not the requested one (never label it as what it is not)."""
    have = facts["artifact_precision"]
    if have not in ACCEPTS.get(requested, (requested,)):
        raise UnsupportedRequest(
            f"{Path(path).name} is a {have} model ({facts['artifact_numerics']}), not {requested}; pass a "
            f"{requested} .tflite, or ask for --precisions {have if have in ACCEPTS else 'matching the file'}")
