"""ONNX export: one self-contained opset-17 file (``torch.onnx.export(..., dynamo=False)``), BatchNorm
folded (eval mode), no custom ops, input "input" [N, C, H, W] float32 in [0, 1] with a dynamic batch
axis, normalisation inside the graph, output "logits". Checked against PyTorch with ONNX Runtime on
real inputs, and written with a calibration table of the activation ranges learned in training.

The table's keys are ONNX tensor names. They are found by value, not by guessing exporter naming: the
tensor at each trainer quantization point is captured in PyTorch and matched (same shape, equal values)
against every intermediate tensor of the exported graph evaluated by ONNX Runtime on the same inputs.
"""
from __future__ import annotations

import copy
import functools
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from devices.choices import unknown_name
from quanttrim.config import SNAP_CHOICES
from quanttrim.wrap import (act_quantizers, activation_clip_ranges, saturate_weights_, snapped_weight,
                            strip_quantization, weight_layers)

CALIB_FORMAT = "quanttrim-calibration/1"
OPSET = 17
#: ONNX metadata key recording whether the exported weights were snapped ("True"/"False").
SNAP_METADATA_KEY = "quanttrim.snap_weights"
#: What ``--snap-weights auto`` does for a model trained with fake quantization: False = the trained FP32 weights,
#: which each backend rounds once on its own grid. Per tensor, a symmetric max-calibrating backend computes the
#: snapped integers from them anyway; asymmetric or per-channel quantizers would round snapped values a second
#: time. Measured (results/reference/snap-weights/report.md, ResNet-20, 3 seeds × 2 draws): unsnapped − snapped
#: logit MSE −0.148 on ORT dynamic INT8 (UINT8 weights), −0.032 on OpenVINO INT8 per tensor, CIs spanning 0 on
#: the other INT8 paths, +0.025 on OpenVINO INT8 per channel (there ``yes`` is better).
SNAP_BY_DEFAULT = False


class ExportError(RuntimeError):
    """The exported graph is not faithful to the PyTorch model (or cannot be mapped)."""


@dataclass(frozen=True)
class ExportResult:
    onnx_path: str
    calib_path: str | None
    max_abs_diff: float
    tensors_mapped: int
    weights_snapped: bool = False


def _saturate(x: torch.Tensor, lo: float, hi: float, lam: float) -> torch.Tensor:
    """x + λ·(clamp(x) − x): the fake quantizer's blend without its rounding (a lone Clip at λ = 1)."""
    c = x.clamp(lo, hi)
    return c if lam == 1.0 else x + lam * (c - x)


def _clip_hook(module: nn.Module, inputs: tuple, output: torch.Tensor, lo: float = 0.0, hi: float = 0.0,
               lam: float = 1.0) -> torch.Tensor:
    return _saturate(output, lo, hi, lam)


def _clip_input_hook(module: nn.Module, inputs: tuple, lo: float = 0.0, hi: float = 0.0, lam: float = 1.0) -> tuple:
    return (_saturate(inputs[0], lo, hi, lam),) + tuple(inputs[1:])


def _output_points(model: nn.Module, points: list[str], example: torch.Tensor) -> set[str]:
    """The points whose output tensor is the network's output (found by identity on one forward pass)."""
    seen: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: seen.__setitem__(p, o))
               for p in points if p != "input"]
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for h in handles:
            h.remove()
    return {p for p, o in seen.items() if o is out}


def plain_copy(model: nn.Module, snap_weights: bool, saturate: bool = True, *, example: torch.Tensor | None = None,
               lam: float | None = None) -> nn.Module:
    """A deep copy with the quantizers removed (optionally with weights snapped onto the learned INT grid).

    With ``saturate`` and a model trained with fake quantization (``quant.enabled``), the copy keeps what the final
    λ trained besides the rounding noise (issue 19): each weight moved by λ·(its quantizer's clamp) and each
    activation point blended with its clamp, x + λ·(clip(x) − x) (an ONNX ``Clip`` alone at λ = 1); see
    :func:`quanttrim.wrap.saturate_weights_` and :func:`quanttrim.wrap.activation_clip_ranges`. The network's
    output is never clamped (ties at the range's end would decide the argmax; backends calibrate the output from
    data). A MAP model (λ ≡ 0) never saw these clamps and gets none.

    Args:
        example: one input batch (N, C, H, W) float32, needed with saturation to find the output point.
        lam: the final λ (default: the model context's λ when set, else the recipe's ``alpha_max``).
    Raises:
        ValueError: saturation is due and ``example`` is missing.
    """
    m = copy.deepcopy(model)
    ctx = m.__dict__.get("_qt_ctx")
    trained_quantized = saturate and ctx is not None and ctx.cfg.enabled
    if trained_quantized and example is None:
        raise ValueError("plain_copy of a fake-quantization-trained model needs example= (one input batch) to find "
                         "the network output, or saturate=False")
    if trained_quantized and lam is None:
        lam = ctx.lam if ctx.lam > 0 else ctx.cfg.alpha_max
    ranges: dict[str, tuple[float, float]] = {}
    with torch.no_grad():
        if trained_quantized and ctx.cfg.quantize_weights:
            saturate_weights_(m, lam)
        if trained_quantized and ctx.cfg.quantize_activations:
            ranges = activation_clip_ranges(m)
        if snap_weights:
            for _, layer in weight_layers(m):
                if layer.qt_w.observer.initialized:
                    layer.weight.copy_(snapped_weight(layer))
    strip_quantization(m)
    m.eval()
    if ranges:
        for point in _output_points(m, list(ranges), example):
            del ranges[point]
    for point, (lo, hi) in ranges.items():
        if point == "input":
            m.register_forward_pre_hook(functools.partial(_clip_input_hook, lo=lo, hi=hi, lam=lam))
        else:
            m.get_submodule(point).register_forward_hook(functools.partial(_clip_hook, lo=lo, hi=hi, lam=lam))
    return m


def _ort_session(model_bytes: bytes):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor addressable
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def export_onnx(
    model: nn.Module,
    path: str | Path,
    inputs: np.ndarray,
    *,
    snap_weights: bool = False,
    calibration: bool = True,
    atol: float = 1e-4,
    metadata: dict[str, str] | None = None,
    lam: float | None = None,
) -> ExportResult:
    """Export a (quantization-wrapped) model, verify it with ONNX Runtime on ``inputs``, write the calib table.

    Args:
        model: the trained model (wrapped by :func:`quanttrim.wrap.quantize_model`, or plain).
        path: output ``.onnx`` path; the table goes to ``<stem>.calib.json`` beside it.
        inputs: real images (N, C, H, W) float32 in [0, 1], N >= 2 (the check also runs batch 1).
        snap_weights: export the weights moved onto the learned INT grid (BN-folded), as λ = 1 trains them
            (ignored for a plain model: it has no grid). False keeps the trained FP32 weights bit for bit.
        calibration: write the calibration table.
        atol: tolerance of the ORT-vs-PyTorch check, relative to the logits' magnitude.
        lam: the final λ of training, for the saturation :func:`plain_copy` keeps (default there).
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = "_qt_ctx" in model.__dict__
    points = act_quantizers(model) if wrapped else {}
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    if x.dim() != 4 or len(x) < 2:
        raise ValueError("inputs must be (N, C, H, W) with N >= 2")
    plain = plain_copy(model, snap_weights, example=x[:1], lam=lam) if wrapped else copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = io.BytesIO()
        torch.onnx.export(
            plain, (x[:1],), buf, dynamo=False, opset_version=OPSET, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in (metadata or {}).items():
        proto.metadata_props.add(key=k, value=str(v))
    onnx.checker.check_model(proto)
    custom = sorted({n.op_type for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ExportError(f"exported graph has non-standard ops: {custom}")

    # Faithfulness: ORT vs PyTorch on real inputs, at the full batch and at batch 1 (dynamic axis).
    with torch.no_grad():
        ref = plain(x).numpy()
    sess = _ort_session(proto.SerializeToString())
    got = sess.run(["logits"], {"input": x.numpy()})[0]
    got1 = sess.run(["logits"], {"input": x[:1].numpy()})[0]
    scale = max(1.0, float(np.abs(ref).max()))
    diff = float(max(np.abs(got - ref).max(), np.abs(got1 - ref[:1]).max()))
    if diff > atol * scale:
        raise ExportError(f"ONNX Runtime disagrees with PyTorch: max |diff| {diff:.3g} > {atol * scale:.3g}")
    onnx.save(proto, str(path))

    calib_path = None
    mapped = 0
    if calibration and points:
        names = map_points_to_onnx(plain, proto, x[: min(len(x), 16)], list(points))
        tensors: dict[str, dict[str, float]] = {}
        trainer_points: dict[str, str] = {}
        # The network outputs get no learned range: the p_hi quantile clips the logits (issue 19); backends
        # calibrate the outputs from data instead.
        graph_outputs = {o.name for o in proto.graph.output}
        for point, q in points.items():
            onnx_name = names[point]
            if not q.observer.initialized or onnx_name in graph_outputs:
                continue
            # The grid trained on contains 0 (asymmetric_qparams widens the range), so does the table.
            lo, hi = min(0.0, float(q.observer.lo.min())), max(0.0, float(q.observer.hi.max()))
            if onnx_name in tensors:  # two points on one tensor: keep the union of the ranges
                lo, hi = min(lo, tensors[onnx_name]["min"]), max(hi, tensors[onnx_name]["max"])
            tensors[onnx_name] = {"min": lo, "max": hi}
            trainer_points[onnx_name] = point
        bits = next(iter(points.values())).ctx.cfg.act_bits
        table = {"format": CALIB_FORMAT, "activation_bits": bits, "tensors": tensors,
                 "model": path.name, "trainer_points": trainer_points}
        calib_path = path.with_name(path.stem + ".calib.json")
        calib_path.write_text(json.dumps(table, indent=1) + "\n")
        mapped = len(tensors)
    return ExportResult(str(path), str(calib_path) if calib_path else None, diff, mapped,
                        weights_snapped=bool(snap_weights and wrapped))


def _all_tensor_values(proto: Any, x: np.ndarray) -> tuple[list[str], dict[str, np.ndarray]]:
    """Every float intermediate tensor of the graph on input ``x``, in topological order."""
    import onnx
    from onnx import TensorProto, helper

    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    m = copy.deepcopy(proto)
    existing = {o.name for o in m.graph.output}
    order = ["input"]
    for node in m.graph.node:
        for o in node.output:
            if o and types.get(o) == TensorProto.FLOAT:
                order.append(o)
                if o not in existing:
                    m.graph.output.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, None))
    sess = _ort_session(m.SerializeToString())
    outs = [o.name for o in sess.get_outputs()]
    vals = dict(zip(outs, sess.run(outs, {"input": x})))
    vals["input"] = x
    return [n for n in order if n in vals], vals


def map_points_to_onnx(plain: nn.Module, proto: Any, x: torch.Tensor, points: list[str]) -> dict[str, str]:
    """{trainer point: ONNX tensor name}, matched by value (first producer in topological order)."""
    captured: dict[str, np.ndarray] = {}
    handles = []
    for p in points:
        if p == "input":
            captured[p] = x.numpy()
            continue
        mod = plain.get_submodule(p)
        handles.append(mod.register_forward_hook(lambda m, i, o, p=p: captured.__setitem__(p, o.detach().numpy().copy())))
    try:
        with torch.no_grad():
            plain(x)
    finally:
        for h in handles:
            h.remove()
    order, vals = _all_tensor_values(proto, x.numpy())
    clip_after = {n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "Clip"}
    result: dict[str, str] = {}
    for p in points:
        v = captured[p]
        tol = 1e-4 * max(1.0, float(np.abs(v).max()))
        match = next((n for n in order if vals[n].shape == v.shape and np.allclose(vals[n], v, rtol=1e-4, atol=tol)), None)
        if match is None:
            raise ExportError(f"quantization point {p!r} (shape {v.shape}) has no matching tensor in the ONNX graph")
        # A point's saturation Clip (plain_copy) may leave these inputs unchanged: the point is its output.
        while (nxt := clip_after.get(match)) is not None and np.allclose(vals[nxt], v, rtol=1e-4, atol=tol):
            match = nxt
        result[p] = match
    return result


def resolve_snap(snap: str, quant_enabled: bool) -> bool:
    """Whether ``--snap-weights SNAP`` snaps a model trained with (``quant_enabled``) or without fake quantization.

    "yes" snaps onto the trained grid (per tensor unless the recipe set ``quant.weight_per_channel``): the FP32
    file then equals what a per-tensor, max-calibrating backend deploys. "no" and "auto" (:data:`SNAP_BY_DEFAULT`)
    export the trained weights, which every backend, per tensor or per channel, rounds once. A model trained
    without fake quantization has no grid and is never snapped. Raises ValueError for any other ``snap``.
    """
    if snap not in SNAP_CHOICES:
        raise ValueError(unknown_name("--snap-weights", snap, SNAP_CHOICES))
    return quant_enabled and (SNAP_BY_DEFAULT if snap == "auto" else snap == "yes")


def snapped_in(onnx_path: str | Path) -> bool | None:
    """Whether an exported file's weights were snapped (its metadata); None for a file that does not say."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    value = props.get(SNAP_METADATA_KEY)
    return None if value is None else value == "True"


def export_checkpoint(checkpoint: str, out: str, snap: str = "auto", calib: bool = True, verify_samples: int = 64,
                      data_dir: str | None = None) -> ExportResult:
    """Export a checkpoint file (used by the CLI, the bundle and the reproduction); ``snap`` as :func:`resolve_snap`."""
    from quanttrim.checkpoint import load_checkpoint
    from quanttrim.data import load_dataset
    from quanttrim.train import rebuild_model

    ckpt = load_checkpoint(checkpoint)
    model, cfg = rebuild_model(ckpt)
    snap_weights = resolve_snap(snap, cfg.recipe.quant.enabled)
    data = load_dataset(cfg.dataset, data_dir or cfg.data_dir, cfg.image_size)
    meta = {"quanttrim.recipe": cfg.recipe.name, "quanttrim.model": cfg.model, "quanttrim.dataset": cfg.dataset,
            "quanttrim.seed": str(cfg.seed), "quanttrim.epochs": str(cfg.epochs),
            SNAP_METADATA_KEY: str(snap_weights)}
    return export_onnx(model, out, data.test_x[: max(2, verify_samples)], snap_weights=snap_weights,
                       calibration=calib, metadata=meta, lam=ckpt.get("metrics", {}).get("lambda_final"))
