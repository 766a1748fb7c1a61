"""The emulator's graph surgery: the ONNX graph whose numerics match a device's quantization policy.

* integer activations: ONNX Runtime's QDQ quantizer under the policy (granularity, signedness, symmetry,
  calibration method incl. an MSE search), weights of 2..7 bits moved onto their grid inside the INT8 container;
* float activations (bf16/fp16): weights rounded or fake-quantized in place and a ``Cast`` pair after every
  activation-producing node (bfloat16 ``Cast`` needs opset 13: older graphs are converted first, or refused);
* operators the device cannot run stay FP32 and are listed as host islands.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.base import ModelArtifact, UnsupportedRequest
from backends.emulated_policy import check_policy, float_weights
from backends.quantization import fake_quantize_weight, quantize_weight, round_to_float, weight_axis

if TYPE_CHECKING:  # pragma: no cover
    from devices.profile import QuantPolicy

#: Ops whose second input is a weight tensor the device quantizes.
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Markers in names of tensors/nodes this module inserts (used to map tensors back to FP32 names).
PRE_SUFFIX = "__emu_pre"
ACT_SUFFIX = "__emu_act"
NODE_PREFIX = "emu_"
MSE_CANDIDATES = 256
DEFAULT_PERCENTILE = 99.999


def name_nodes(model: Any) -> None:
    """Give every unnamed node a unique name (ORT's nodes_to_exclude and the island list need names)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            base = f"{node.op_type}_{i}"
            name, k = base, 0
            while name in used:
                k += 1
                name = f"{base}_{k}"
            node.name = name
            used.add(name)


def float_tensor_names(model: Any) -> set[str]:
    """Names of float32 tensors (graph inputs, node outputs) after shape/type inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference can fail on exotic graphs: fall back to what the file states
        inferred = model
    out = set()
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            out.add(vi.name)
    return out


def _initializers(model: Any) -> dict[str, Any]:
    return {init.name: init for init in model.graph.initializer}


def _consumers(model: Any) -> dict[str, list[Any]]:
    cons: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            cons.setdefault(name, []).append(node)
    return cons


def quantizable_op_types() -> set[str]:
    """Op types ONNX Runtime's QDQ quantizer knows (its default op_types_to_quantize)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QLinearOpsRegistry) | set(QDQRegistry)


# ----------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------
def mse_ranges(model_path: Path, input_name: str, images: np.ndarray, symmetric: bool, n_bits: int):
    """Activation ranges minimising the expected quantization MSE over a histogram of each tensor.

    For each tensor a 2048-bin histogram over ±max|x| (ORT's collector) is scanned with candidate
    clipping thresholds t: the expected error is Σ count·(x − clip(x))² outside the range plus
    count·step²/12 inside, with step = range / (2^b − 1).
    """
    import tempfile

    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, create_calibrator

    from backends.onnxruntime_backend import ENTROPY_NUM_BINS, CalibrationReader

    levels = float((1 << n_bits) - 1)
    with tempfile.TemporaryDirectory(prefix="qt-emu-mse-") as tmp:
        calibrator = create_calibrator(Path(model_path), None, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=CalibrationMethod.Percentile,
                                       extra_options={"symmetric": False, "num_bins": ENTROPY_NUM_BINS})
        calibrator.collect_data(CalibrationReader(input_name, images))
        hists = calibrator.collector.get_histogram_dict()
    data = {}
    for name, (hist, edges, vmin, vmax, thr) in hists.items():
        hist = np.asarray(hist, dtype=np.float64)
        centers = (np.asarray(edges[:-1], dtype=np.float64) + np.asarray(edges[1:], dtype=np.float64)) / 2
        vmin, vmax, thr = float(vmin), float(vmax), float(thr)
        best, best_err = (vmin, vmax), np.inf
        if thr > 0 and hist.sum() > 0:
            for t in np.linspace(thr / MSE_CANDIDATES, thr, MSE_CANDIDATES):
                lo, hi = (-t, t) if symmetric else (max(vmin, -t), min(vmax, t))
                lo, hi = min(lo, 0.0), max(hi, 0.0)
                step = (hi - lo) / levels
                clipped = np.clip(centers, lo, hi)
                err = float(np.sum(hist * (centers - clipped) ** 2) + np.sum(hist[(centers >= lo) & (centers <= hi)])
                            * step * step / 12.0)
                if err < best_err:
                    best, best_err = (lo, hi), err
        data[name] = TensorData(lowest=np.float32(best[0]), highest=np.float32(best[1]))
    return TensorsData(CalibrationMethod.MinMax, data)


def compute_policy_ranges(pre: Path, model: ModelArtifact, images: np.ndarray, method: str,
                          policy: "QuantPolicy"):
    """ORT TensorsData for the policy's calibration method (reusing the ORT adapter's helpers)."""
    from backends.onnxruntime_backend import apply_learned_ranges, compute_ranges, graph_output_names

    symmetric = bool(policy.activation_symmetric)
    if method == "mse":
        bits = 16 if policy.activation == "int16" else 8
        return mse_ranges(pre, model.input_name, images, symmetric, bits)
    base = "minmax" if method == "learned" else method
    percentile = policy.percentile if policy.percentile is not None else DEFAULT_PERCENTILE
    ranges, _ = compute_ranges(pre, model.input_name, images, base, symmetric=symmetric, percentile=percentile)
    if method == "learned":
        if model.calibration_table is None:
            raise UnsupportedRequest(f"checkpoint {model.name} has no learned calibration table (*.calib.json)")
        if apply_learned_ranges(ranges, model.calibration_table, graph_output_names(pre)) == 0:
            raise UnsupportedRequest(f"no tensor of {model.calibration_table} names a tensor of the graph")
    return ranges


# ----------------------------------------------------------------------------------------------
# Graph builders
# ----------------------------------------------------------------------------------------------
def _island_record(node: Any, reason: str) -> dict[str, str]:
    return {"node": node.name, "op_type": node.op_type, "reason": reason}


def build_integer_graph(pre: Path, dst: Path, model: ModelArtifact, policy: "QuantPolicy", method: str,
                        calibration: np.ndarray, out_dir: Path) -> dict[str, Any]:
    """QDQ graph from ONNX Runtime's quantizer under the policy; returns facts for the metadata."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    fp32 = onnx.load(str(pre))
    known = quantizable_op_types()
    fallback = set(policy.fallback_ops)
    excluded = [n.name for n in fp32.graph.node if n.op_type in fallback]
    ranges = compute_policy_ranges(pre, model, calibration, method, policy)
    cache = out_dir / f"calibration-{method}.json"
    save_tensors_data(ranges, cache)
    act_type = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8, "int16": QuantType.QInt16}[policy.activation]
    wbits = int(policy.weight_bits or 8)
    weight_type = QuantType.QInt16 if wbits > 8 else QuantType.QInt8
    extra: dict[str, Any] = {}
    if policy.activation_symmetric:
        extra["ActivationSymmetric"] = True
    if policy.activation == "int16" or wbits > 8:
        extra["UseQDQContribOps"] = True  # 16-bit Q/DQ before opset 21 live in the com.microsoft domain
    quantize_static(
        str(pre), str(dst), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=sorted(known - fallback) or None,
        per_channel=policy.per_channel,
        activation_type=act_type, weight_type=weight_type,
        nodes_to_exclude=excluded or None, extra_options=extra or None,
        calibrate_method=ranges.calibration_method, calibration_cache_path=str(cache),
    )
    q = onnx.load(str(dst))
    requantized = 0
    if wbits < 8:
        requantized = _requantize_weights(q, fp32, wbits, policy.weight_range == "full")
    float_outputs = [] if policy.output_quantized else _float_graph_outputs(q)
    if requantized or float_outputs:
        onnx.save(q, str(dst))
    islands = []
    for node in q.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.op_type in fallback:
            islands.append(_island_record(node, "device fallback op (policy.fallback_ops)"))
        elif node.op_type not in known:
            islands.append(_island_record(node, "no quantized kernel in the emulator (ONNX Runtime QDQ registry)"))
    return {"fp32_islands": islands, "weights_requantized_to_bits": requantized,
            "calibration_cache": cache.name, "float_outputs": float_outputs}


def _float_graph_outputs(q: Any) -> list[str]:
    """Drop the QuantizeLinear→DequantizeLinear pair ORT puts on each graph output (TensorRT-style float outputs).

    ORT renames the producer's output ``<name>_QuantizeLinear_Input``; it gets the graph output's name back.
    """
    outputs = {o.name for o in q.graph.output}
    producers = {o: n for n in q.graph.node for o in n.output}
    dropped = []
    for dq in list(q.graph.node):
        if dq.op_type != "DequantizeLinear" or dq.output[0] not in outputs:
            continue
        qn = producers.get(dq.input[0])
        if qn is None or qn.op_type != "QuantizeLinear":
            continue
        src = producers.get(qn.input[0])
        users = [n for n in q.graph.node if qn.input[0] in n.input and n is not qn]
        if src is None or users:
            continue  # the float value feeds something else too: leave the graph as ORT built it
        for i, name in enumerate(src.output):
            if name == qn.input[0]:
                src.output[i] = dq.output[0]
        q.graph.node.remove(qn)
        q.graph.node.remove(dq)
        dropped.append(dq.output[0])
    return dropped


def _requantize_weights(q: Any, fp32: Any, bits: int, full_range: bool = False) -> int:
    """Move every weight DequantizeLinear of a QDQ graph onto the b-bit grid (INT8 container; ``full_range``:
    backends.quantization.quantize_weight).

    The bias (int32, scale = input scale × weight scale) is recomputed with the new weight scale.
    """
    from onnx import numpy_helper as nh

    inits = _initializers(q)
    fp_inits = _initializers(fp32)
    producers = {o: n for n in q.graph.node for o in n.output}
    cons = _consumers(q)

    def set_init(name: str, arr: np.ndarray) -> None:
        inits[name].CopyFrom(nh.from_array(arr, name))

    count = 0
    for node in list(q.graph.node):
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        users = cons.get(node.output[0], [])
        if not users or not all(u.op_type in WEIGHT_OPS and len(u.input) > 1 and u.input[1] == node.output[0]
                                for u in users):
            continue
        raw = node.input[0]
        src = raw[:-len("_quantized")] if raw.endswith("_quantized") else raw
        if src not in fp_inits:
            continue
        w = nh.to_array(fp_inits[src]).astype(np.float32)
        axis_attr = next((a.i for a in node.attribute if a.name == "axis"), None)
        per_channel = nh.to_array(inits[node.input[1]]).size > 1
        axis = (axis_attr if axis_attr is not None else 1) if per_channel else None
        qv, scale = quantize_weight(w, bits, axis, full_range)
        set_init(raw, qv.astype(np.int8))
        set_init(node.input[1], scale.astype(np.float32).reshape(nh.to_array(inits[node.input[1]]).shape))
        count += 1
        for user in users:
            if len(user.input) < 3 or not user.input[2]:
                continue
            bias_dq = producers.get(user.input[2])
            act_dq = producers.get(user.input[0])
            if bias_dq is None or act_dq is None or bias_dq.op_type != "DequantizeLinear" or \
                    act_dq.op_type != "DequantizeLinear" or bias_dq.input[0] not in inits:
                continue
            b_name = user.input[2]
            b = nh.to_array(fp_inits[b_name]).astype(np.float32) if b_name in fp_inits else \
                nh.to_array(inits[bias_dq.input[0]]).astype(np.float32) * nh.to_array(inits[bias_dq.input[1]])
            s_in = nh.to_array(inits[act_dq.input[1]]).astype(np.float32)
            b_scale = (s_in * scale).astype(np.float32)
            b_scale = np.where(b_scale == 0, np.float32(1.0), b_scale).astype(np.float32)
            set_init(bias_dq.input[0], np.rint(b / b_scale).astype(np.int32))
            set_init(bias_dq.input[1], b_scale.reshape(nh.to_array(inits[bias_dq.input[1]]).shape))
    return count


def build_float_graph(pre: Path, dst: Path, policy: "QuantPolicy") -> dict[str, Any]:
    """Weights fake-quantized/rounded in place and Cast pairs rounding activations to bf16/fp16."""
    import onnx
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    m = onnx.load(str(pre))
    fallback = set(policy.fallback_ops)
    inits = _initializers(m)
    cons = _consumers(m)
    floats = float_tensor_names(m)
    islands = [_island_record(n, "device fallback op (policy.fallback_ops)") for n in m.graph.node
               if n.op_type in fallback]
    wfloat = float_weights(policy)
    quantized_weights = 0
    rounded = 0
    # Weights: integer grid (weight_bits) on WEIGHT_OPS, or float rounding of every float initializer.
    if wfloat is None:
        for node in m.graph.node:
            if node.op_type not in WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in inits:
                continue
            users = cons.get(node.input[1], [])
            if any(u.op_type in fallback or u.op_type not in WEIGHT_OPS for u in users):
                continue  # shared with a host island: leave it FP32
            w = nh.to_array(inits[node.input[1]])
            if w.dtype != np.float32 or w.ndim < 2:
                continue
            axis = weight_axis(node) if policy.weight_granularity == "per_channel" else None
            fq = fake_quantize_weight(w, int(policy.weight_bits or 8), axis, policy.weight_range == "full")
            inits[node.input[1]].CopyFrom(nh.from_array(fq, node.input[1]))
            quantized_weights += 1
    elif wfloat != "fp32":
        for name, init in inits.items():
            if all(u.op_type not in fallback for u in cons.get(name, [])):
                arr = nh.to_array(init)
                if arr.dtype == np.float32:
                    init.CopyFrom(nh.from_array(round_to_float(arr, wfloat), name))
                    rounded += 1
    casts = 0
    act = policy.activation
    if act in ("bf16", "fp16"):
        to = onnx.TensorProto.BFLOAT16 if act == "bf16" else onnx.TensorProto.FLOAT16
        new_nodes = []
        for inp in m.graph.input:
            if inp.name in inits or inp.name not in floats:
                continue
            low, out = inp.name + "__emu_low", inp.name + ACT_SUFFIX
            for user in cons.get(inp.name, []):
                for i, name in enumerate(user.input):
                    if name == inp.name:
                        user.input[i] = out
            new_nodes += [oh.make_node("Cast", [inp.name], [low], to=to, name=f"{NODE_PREFIX}cast_low_{inp.name}"),
                          oh.make_node("Cast", [low], [out], to=onnx.TensorProto.FLOAT,
                                       name=f"{NODE_PREFIX}cast_back_{inp.name}")]
            casts += 1
        for node in list(m.graph.node):
            new_nodes.append(node)
            if node.op_type in fallback:
                continue
            for i, name in enumerate(list(node.output)):
                if not name or name not in floats:
                    continue
                pre_name, low = name + PRE_SUFFIX, name + "__emu_low"
                node.output[i] = pre_name
                new_nodes += [oh.make_node("Cast", [pre_name], [low], to=to, name=f"{NODE_PREFIX}cast_low_{name}"),
                              oh.make_node("Cast", [low], [name], to=onnx.TensorProto.FLOAT,
                                           name=f"{NODE_PREFIX}cast_back_{name}")]
                casts += 1
        del m.graph.node[:]
        m.graph.node.extend(new_nodes)
    onnx.save(m, str(dst))
    return {"fp32_islands": islands, "weights_fake_quantized": quantized_weights,
            "initializers_rounded": rounded, "activation_cast_pairs": casts}


def build_emulated_graph(model: ModelArtifact, policy: "QuantPolicy", calibration: np.ndarray | None,
                         out_dir: Path, calibration_override: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Write ``preprocessed.onnx`` (the FP32 reference graph) and ``model.onnx`` (the policy graph)."""
    import onnx

    from backends.onnx_graph import BF16_CAST_OPSET, PER_AXIS_QDQ_OPSET, upgrade_opset
    from backends.onnxruntime_backend import _preprocess

    method = check_policy(policy, calibration_override)
    out_dir = Path(out_dir)
    source, upgraded = Path(model.path), {}
    if method is not None and policy.per_channel:
        source, upgraded = upgrade_opset(source, out_dir / "opset-upgraded.onnx", PER_AXIS_QDQ_OPSET,
                                         f"policy {policy.name!r}: per-channel integer weights (per-axis DequantizeLinear)")
    elif policy.activation == "bf16":
        source, upgraded = upgrade_opset(source, out_dir / "opset-upgraded.onnx", BF16_CAST_OPSET,
                                         f"policy {policy.name!r}: bf16 activations (Cast to bfloat16)")
    pre = _preprocess(source, out_dir / "preprocessed.onnx")
    m = onnx.load(str(pre))
    name_nodes(m)
    onnx.save(m, str(pre))
    dst = out_dir / "model.onnx"
    facts: dict[str, Any] = {"policy": dataclasses.asdict(policy), "fp32_graph": pre.name, **upgraded}
    if method is not None:
        if calibration is None or len(calibration) == 0:
            raise UnsupportedRequest(f"policy {policy.name!r} has integer activations and needs a calibration set; "
                                     "none was given")
        facts["calibration_method"] = method
        facts.update(build_integer_graph(pre, dst, model, policy, method, calibration, out_dir))
    else:
        facts.update(build_float_graph(pre, dst, policy))
    facts["fp32_island_ops"] = sorted({i["op_type"] for i in facts["fp32_islands"]})
    return dst, facts
