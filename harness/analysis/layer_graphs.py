"""Graph surgery for per-layer fidelity: match FP32 tensors to the compiled graph's and build the graphs that
expose them (``entire``: the compiled graph end to end; ``single``: each layer re-fed from FP32 tensors)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

REF_SUFFIX = "__ref"
SINGLE_SUFFIX = "__single"


@dataclass
class TensorMap:
    """FP32 tensor name -> names in the compiled graph (entire value, single-layer raw value)."""

    fp32: list[str]
    producer: dict[str, Any]
    entire: dict[str, str]
    single: dict[str, str]
    raw_outputs: set[str]
    #: FP32 name -> the inserted (first, second) node pair that requantizes/rounds the raw output.
    chains: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    #: FP32 name -> the compiled graph's node producing it (differs from the FP32 one after fusion).
    compiled_producer: dict[str, Any] = field(default_factory=dict)


def _is_inserted(node: Any) -> bool:
    from backends.emulated_backend import NODE_PREFIX

    return node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.name.startswith(NODE_PREFIX)


def map_tensors(fp32: Any, compiled: Any) -> TensorMap:
    """Match every float intermediate of the FP32 graph to the compiled graph's tensors."""
    from backends.emulated_backend import emulated_tensor_source, float_tensor_names

    floats = float_tensor_names(fp32)
    graph_inputs = {i.name for i in fp32.graph.input}
    producer = {}
    order = []
    for node in fp32.graph.node:
        for o in node.output:
            if o and o in floats and o not in graph_inputs:
                producer[o] = node
                order.append(o)
    q_outputs = {o for n in compiled.graph.node for o in n.output}
    raw = {}
    raw_outputs = set()
    compiled_producer = {}
    for node in compiled.graph.node:
        if _is_inserted(node):
            continue
        for o in node.output:
            if o:
                raw_outputs.add(o)
                raw.setdefault(emulated_tensor_source(o), o)
                compiled_producer.setdefault(emulated_tensor_source(o), node)
    dq_of = {}
    consumers: dict[str, list[Any]] = {}
    for node in compiled.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    chains: dict[str, tuple[Any, Any]] = {}
    for node in compiled.graph.node:
        first = node.op_type == "QuantizeLinear" or (node.op_type == "Cast" and _is_inserted(node))
        if not first:
            continue
        src = emulated_tensor_source(node.input[0])
        for user in consumers.get(node.output[0], []):
            if user.op_type in ("DequantizeLinear", "Cast"):
                if node.op_type == "QuantizeLinear":
                    dq_of.setdefault(src, user.output[0])
                if node.input[0] in raw_outputs:
                    chains.setdefault(src, (node, user))
    entire, single = {}, {}
    for name in order:
        if name in dq_of:
            entire[name] = dq_of[name]
        elif name in q_outputs:
            entire[name] = name
        if name in chains:
            single[name] = name + SINGLE_SUFFIX
        elif name in raw:
            single[name] = raw[name]
    return TensorMap(order, producer, entire, single, raw_outputs, chains, compiled_producer)


def _float_output(name: str) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _merge_opsets(*models: Any) -> list[Any]:
    from onnx import helper

    versions: dict[str, int] = {}
    for m in models:
        for op in m.opset_import:
            versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    return [helper.make_opsetid(d, v) for d, v in sorted(versions.items())]


def build_entire_model(compiled: Any, names: Sequence[str]) -> Any:
    """The compiled graph with the given tensors exposed as outputs."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(compiled)
    existing = {o.name for o in m.graph.output}
    m.graph.output.extend(_float_output(n) for n in dict.fromkeys(names) if n not in existing)
    return m


def build_single_model(fp32: Any, compiled: Any, tmap: TensorMap, ref_names: Sequence[str],
                       single_names: Sequence[str]) -> Any:
    """A copy of the FP32 graph (tensors renamed ``*__ref``) feeding the compiled graph's layers.

    Every input of a compiled-graph node that is the raw output of another original layer is
    re-pointed at the FP32 reference tensor, so each layer sees reference inputs (after the
    policy's own inserted quantization) and its output carries only its own error.
    """
    import onnx
    from onnx import helper

    from backends.emulated_backend import emulated_tensor_source

    inputs = {i.name for i in fp32.graph.input}
    ref_inits = {i.name for i in fp32.graph.initializer}

    def ref(name: str) -> str:
        return name if (not name or name in inputs and name not in ref_inits) else name + REF_SUFFIX

    nodes = []
    for node in fp32.graph.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.name = "ref__" + node.name
        n.input[:] = [ref(i) for i in node.input]
        n.output[:] = [ref(o) for o in node.output]
        nodes.append(n)
    inits = []
    for init in fp32.graph.initializer:
        t = onnx.TensorProto()
        t.CopyFrom(init)
        t.name = ref(init.name)
        inits.append(t)
    fp32_tensors = set(tmap.producer)
    for node in compiled.graph.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        for k, name in enumerate(n.input):
            src = emulated_tensor_source(name)
            if name in tmap.raw_outputs and src in fp32_tensors:
                n.input[k] = ref(src)
        nodes.append(n)
    # The layer's own output requantization/rounding, applied to its raw output (not to the reference):
    # a copy of the inserted chain so the single-layer value includes it, as the entire value does.
    for src, (first, second) in tmap.chains.items():
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(first)
        b.CopyFrom(second)
        a.name, b.name = first.name + SINGLE_SUFFIX, second.name + SINGLE_SUFFIX
        a.output[0] = first.output[0] + SINGLE_SUFFIX
        b.input[0] = a.output[0]
        b.output[0] = src + SINGLE_SUFFIX
        nodes += [a, b]
    inits.extend(compiled.graph.initializer)
    outputs = [_float_output(n) for n in dict.fromkeys(list(ref_names) + list(single_names))]
    graph = helper.make_graph(nodes, "layerwise_single", list(compiled.graph.input), outputs, inits)
    model = helper.make_model(graph, opset_imports=_merge_opsets(fp32, compiled))
    model.ir_version = max(fp32.ir_version, compiled.ir_version)
    return model


def _weight_facts(node: Any, inits: dict[str, np.ndarray]) -> tuple[float | None, float | None, float | None]:
    for name in list(node.input)[1:]:
        w = inits.get(name)
        if w is not None and w.ndim >= 2 and w.size:
            a = np.abs(w.astype(np.float64))
            p = float(np.percentile(a, 99.0))
            return float(w.min()), float(w.max()), (float(a.max() / p) if p > 0 else None)
    return None, None, None


def _per_input_elements(model: Any) -> dict[str, int]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.dim_value > 0 for d in dims[1:]):
            out[vi.name] = int(np.prod([d.dim_value for d in dims[1:]], dtype=np.int64))
    return out


def _session(model: Any, threads: int | None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.inter_op_num_threads = 1
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])


