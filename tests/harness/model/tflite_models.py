"""Tiny .tflite models written in-process with the flatbuffers builder (no TensorFlow needed).

The field slots follow LiteRT's schema (tensorflow/compiler/mlir/lite/schema/schema.fbs): Model, SubGraph, Tensor,
Operator, OperatorCode, Buffer. Only float32 tensors and builtin element-wise operators are written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import flatbuffers

#: BuiltinOperator codes used here.
ADD, MUL, SOFTMAX = 0, 18, 25


def _ints(b: flatbuffers.Builder, xs: Sequence[int]) -> int:
    b.StartVector(4, len(xs), 4)
    for x in reversed(xs):
        b.PrependInt32(int(x))
    return b.EndVector()


def _tables(b: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def write_model(path: Path, tensors: Sequence[str], inputs: Sequence[int], outputs: Sequence[int],
                ops: Sequence[tuple[int, Sequence[int], Sequence[int]]], features: int = 3) -> Path:
    """A one-subgraph model: every tensor float32 of shape (1, features), batch signature -1.

    ops: (builtin code, input tensor indices, output tensor indices), run in order.
    """
    b = flatbuffers.Builder(1024)
    names = [b.CreateString(n) for n in tensors]
    tensor_offs = []
    for name in names:
        shape, signature = _ints(b, [1, features]), _ints(b, [-1, features])
        b.StartObject(10)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependInt8Slot(1, 0, 0)        # TensorType FLOAT32
        b.PrependUint32Slot(2, 0, 0)      # buffer 0: no constant data
        b.PrependUOffsetTRelativeSlot(3, name, 0)
        b.PrependUOffsetTRelativeSlot(7, signature, 0)
        tensor_offs.append(b.EndObject())
    codes = sorted({code for code, _, _ in ops})
    op_offs = []
    for code, op_in, op_out in ops:
        i_vec, o_vec = _ints(b, op_in), _ints(b, op_out)
        b.StartObject(13)
        b.PrependUint32Slot(0, codes.index(code), 0)
        b.PrependUOffsetTRelativeSlot(1, i_vec, 0)
        b.PrependUOffsetTRelativeSlot(2, o_vec, 0)
        op_offs.append(b.EndObject())
    t_vec, in_vec, out_vec, ops_vec = _tables(b, tensor_offs), _ints(b, inputs), _ints(b, outputs), _tables(b, op_offs)
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, t_vec, 0)
    b.PrependUOffsetTRelativeSlot(1, in_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, out_vec, 0)
    b.PrependUOffsetTRelativeSlot(3, ops_vec, 0)
    subgraphs = _tables(b, [b.EndObject()])
    code_offs = []
    for code in codes:
        b.StartObject(4)
        b.PrependInt8Slot(0, code, 0)     # deprecated_builtin_code (codes < 127)
        b.PrependInt32Slot(2, 1, 1)       # version
        b.PrependInt32Slot(3, code, 0)    # builtin_code
        code_offs.append(b.EndObject())
    codes_vec = _tables(b, code_offs)
    b.StartObject(3)
    buffers = _tables(b, [b.EndObject()])
    b.StartObject(8)
    b.PrependUint32Slot(0, 3, 0)          # schema version 3
    b.PrependUOffsetTRelativeSlot(1, codes_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    Path(path).write_bytes(b.Output())
    return Path(path)


def two_inputs_two_outputs(path: Path) -> Path:
    """a (N, 3), b (N, 3) -> "prod" = a * b first, "sum" = a + b second."""
    return write_model(path, ["a", "b", "sum", "prod"], [0, 1], [3, 2], [(ADD, [0, 1], [2]), (MUL, [0, 1], [3])])


def softmax_classifier(path: Path) -> Path:
    """x (N, 3) -> "p" = SOFTMAX(x + x): a classifier whose graph ends in a softmax (K = 3)."""
    return write_model(path, ["x", "s", "p"], [0], [2], [(ADD, [0, 0], [1]), (SOFTMAX, [1], [2])])
