"""Weight and activation distributions per layer group, MAP vs Quant-Trim (paper Figs 2, 9)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter
import re
from dataclasses import dataclass
from pathlib import Path

from harness.analysis.figures import FigureOptions, register_figure
from harness.analysis.figures.style import BASE_RC, PALETTE, RECIPE_COLOURS, RECIPE_LABELS, NoPlotData, _say, \
    _style, _title
from harness.store.reader import ResultStore, recipe_from_name

# --- weight and activation distributions (paper Figs 2, 9) --------------------------------------------

_WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
_ACT_OPS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Gelu", "Silu", "Mish", "Tanh",
            "PRelu", "Elu", "Selu", "Softplus"}
_NAMED_GROUP = re.compile(r"(layer\d+|stage\d+|block\d+|features[._]\d+|encoder[._]layer[._]\d+|blocks[._]\d+)")


def _weight_key(node: Any, init_name: str) -> str:
    """A layer's name for grouping: the node name ("/layer2/layer2.0/conv1/Conv") carries the block even when
    BatchNorm folding left the initializer anonymous ("onnx::Conv_213")."""
    return f"{node.name}|{init_name}" if node.name else init_name


def _weight_tensors(model: Any) -> list[tuple[str, np.ndarray]]:
    """(layer key, array) of the weights of Conv/Gemm/MatMul nodes in graph order (BN already folded)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out, seen = [], set()
    for node in model.graph.node:
        idx = _WEIGHT_OPS.get(node.op_type)
        if idx is None or len(node.input) <= idx:
            continue
        name = node.input[idx]
        if name in inits and name not in seen:
            arr = numpy_helper.to_array(inits[name])
            if arr.ndim >= 2 and np.issubdtype(arr.dtype, np.floating):
                seen.add(name)
                out.append((_weight_key(node, name), arr.astype(np.float32, copy=False)))
    return out


def layer_groups(names: Sequence[str]) -> list[str]:
    """A group per layer: the block name when the names carry one (layer2...), else stem/early/middle/late/head."""
    named = [_NAMED_GROUP.search(n) for n in names]
    hits = [i for i, m in enumerate(named) if m]
    if hits:
        groups, last = [], None
        for i, m in enumerate(named):
            if m:
                last = m.group(1).replace("_", ".")
                groups.append(last)
            else:  # before the first block: the stem; after the last: the head; between: the block it sits in
                groups.append("stem" if i < hits[0] else "head" if i > hits[-1] else str(last))
        return groups
    n = len(names)
    if n <= 2:
        return ["stem", "head"][:n] if n == 2 else ["all layers"] * n
    out = ["stem"] + [""] * (n - 2) + ["head"]
    inner = n - 2
    for i in range(inner):
        out[1 + i] = ("early", "middle", "late")[min(2, i * 3 // inner)] if inner >= 3 else "middle"
    return out


def _activation_values(model: Any, images: np.ndarray, max_per_tensor: int = 200_000,
                       seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(weight name of the layer before it, values) for each activation node on ``images`` (onnxruntime CPU).

    The activation is attributed to the last weight layer before it in graph order, so activation
    panels line up with the weight panels of the same layer group.
    """
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    names, producers, last_weight = [], [], ""
    for node in m.graph.node:
        idx = _WEIGHT_OPS.get(node.op_type)
        if idx is not None and len(node.input) > idx and node.input[idx] in inits:
            last_weight = _weight_key(node, node.input[idx])
        if node.op_type in _ACT_OPS and node.output:
            names.append(node.output[0])
            producers.append(last_weight)
    for out in m.graph.output:  # the model output (logits) stands for the head's activations
        if out.name not in names:
            names.append(out.name)
            producers.append(last_weight)
    existing = {o.name for o in m.graph.output}
    for name in names:  # expose every activation as a graph output so one run returns them all
        if name not in existing:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed_name = sess.get_inputs()[0].name
    outs = sess.run(names, {feed_name: images})
    rng = np.random.default_rng(seed)
    result = []
    for name, arr in zip(producers, outs):
        v = np.asarray(arr, dtype=np.float32).ravel()
        if v.size > max_per_tensor:
            v = rng.choice(v, max_per_tensor, replace=False)
        result.append((name, v))
    return result


def _sample_images(model: Any, n: int) -> tuple[np.ndarray | None, str]:
    """Real evaluation images shaped for the model's input, or None with the reason."""
    from harness.data import datasets
    weights = {i.name for i in model.graph.initializer}  # old exporters list weights as graph inputs too
    image = next(i for i in model.graph.input if i.name not in weights)
    shape = tuple(d.dim_value for d in image.type.tensor_type.shape.dim[1:])
    try:
        split = datasets.load_bundled_sample("test").head(n)
    except Exception as exc:  # the bundled sample is missing: say so on the figure
        return None, f"no evaluation images ({type(exc).__name__}: {exc})"
    imgs = np.asarray(split.images, dtype=np.float32)
    if shape and tuple(imgs.shape[1:]) != shape:
        return None, f"model input {list(shape)} does not match the bundled images {list(imgs.shape[1:])}"
    return imgs, split.source


@dataclass
class CheckpointSpec:
    """A checkpoint file with its recipe label (map / quanttrim / other)."""

    path: Path
    recipe: str
    label: str


def checkpoint_spec(path: str | Path, recipe: str | None = None) -> CheckpointSpec:
    path = Path(path)
    stem = path.name[:-5] if path.name.endswith(".onnx") else path.stem
    recipe = recipe or recipe_from_name(stem) or stem
    return CheckpointSpec(path, recipe, f"{RECIPE_LABELS.get(recipe, recipe)} ({stem})")


def distributions_figure(checkpoints: Sequence[CheckpointSpec], activations: bool = True, n_images: int = 64,
                         bins: int = 121) -> Figure:
    """Log-scale histograms per layer group of weights (top row) and activations (bottom row)."""
    import onnx

    from backends.onnx_graph import constants_as_initializers

    if not checkpoints:
        raise NoPlotData("no checkpoint files to read weights from (pass --checkpoints or a run whose manifest "
                         "lists existing .onnx paths)")
    loaded = []
    for spec in checkpoints:
        if not spec.path.is_file():
            raise NoPlotData(f"checkpoint {spec.path} does not exist")
        model = onnx.load(str(spec.path))
        constants_as_initializers(model)   # weights stored as Constant nodes (paddle2onnx) are weights too
        loaded.append((spec, model))
    weights = {spec.label: _weight_tensors(m) for spec, m in loaded}
    ref_names = [n for n, _ in weights[loaded[0][0].label]]
    # each checkpoint's own names -> groups (exports of one architecture differ only in names)
    weight_group = {lab: dict(zip([n for n, _ in ws], layer_groups([n for n, _ in ws]))) for lab, ws in weights.items()}
    if not ref_names:
        raise NoPlotData(f"{loaded[0][0].path} has no Conv/Gemm/MatMul weight initializers")
    group_order: list[str] = []
    for g in layer_groups(ref_names):
        if g not in group_order:
            group_order.append(g)
    acts: dict[str, list[tuple[str, np.ndarray]]] = {}
    act_note = ""
    if activations:
        for spec, m in loaded:
            imgs, source = _sample_images(m, n_images)
            if imgs is None:
                act_note = source
                acts = {}
                break
            try:
                acts[spec.label] = _activation_values(m, imgs)
            except Exception as exc:  # onnxruntime missing or the graph cannot run: say why on the figure
                act_note = f"activations not computed ({type(exc).__name__}: {str(exc)[:120]})"
                acts = {}
                break
            act_note = f"activations on {len(imgs)} images from {source}"
    rows = 2 if activations else 1
    ncols = len(group_order)
    import matplotlib

    with matplotlib.rc_context(BASE_RC):
        fig = Figure(figsize=(3.2 * ncols + 2.6, 3.0 * rows), layout="constrained")
        axes = fig.subplots(rows, ncols, squeeze=False)
    palette = iter(PALETTE[2:])
    colours = {spec.label: RECIPE_COLOURS.get(spec.recipe) or next(palette) for spec, _ in loaded}
    styles = ["-", "--", "-.", ":"]
    for col, group in enumerate(group_order):
        _hist_panel(axes[0][col], {lab: _group_values(ws, group) for lab, ws in weights.items()}, colours, styles,
                    f"weights: {group}", "weight value", gid=f"weights|{group}")
    if activations:
        if acts:
            for col, group in enumerate(group_order):
                data = {}
                for lab, a in acts.items():
                    vals = [v for n, v in a if weight_group[lab].get(n, group_order[0]) == group]
                    data[lab] = np.concatenate(vals) if vals else np.array([], np.float32)
                _hist_panel(axes[1][col], data, colours, styles, f"activations: {group}", "activation value",
                            gid=f"activations|{group}")
        else:
            for ax in axes[1]:
                ax.set_visible(False)
            axes[1][0].set_visible(True)
            _say(axes[1][0], act_note or "activations not computed", gid="no-activations")
            axes[1][0].set_xticks([])
            axes[1][0].set_yticks([])
    handles = [Line2D([], [], color=colours[s.label], linestyle=styles[i % len(styles)], label=s.label)
               for i, (s, _) in enumerate(loaded)]
    handles.append(Line2D([], [], linestyle="none", label="label: max|x| / p99|x| (outlier ratio)"))
    fig.legend(handles=handles, loc="outside right upper", frameon=False).set_gid("distribution-legend")
    _title(fig, "Weight and activation distributions per layer group (log-scale counts)")
    if act_note and acts:
        fig.supxlabel(act_note, fontsize=8, color="#555555")
    return fig


def _group_values(ws: Sequence[tuple[str, np.ndarray]], group: str) -> np.ndarray:
    groups = layer_groups([n for n, _ in ws])
    vals = [w.ravel() for (n, w), g in zip(ws, groups) if g == group]
    return np.concatenate(vals) if vals else np.array([], np.float32)


def _hist_panel(ax: Any, data: Mapping[str, np.ndarray], colours: Mapping[str, str], styles: Sequence[str],
                title: str, xlabel: str, gid: str) -> None:
    _style(ax)
    finite = [v[np.isfinite(v)] for v in data.values() if v.size]
    if not finite or not any(f.size for f in finite):
        _say(ax, "no values", gid=f"{gid}|empty")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    lo = min(float(f.min()) for f in finite if f.size)
    hi = max(float(f.max()) for f in finite if f.size)
    if lo < 0 < hi:  # symmetric bins around 0 so both checkpoints share the grid
        m = max(-lo, hi)
        lo, hi = -m, m
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, 122)
    for i, (label, v) in enumerate(data.items()):
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        counts, _ = np.histogram(v, bins=edges)
        a = np.abs(v)
        p99 = float(np.percentile(a, 99))
        ratio = float(a.max() / p99) if p99 > 0 else math.nan
        (line,) = ax.step(edges[:-1], np.maximum(counts, 0.8), where="post", color=colours[label],
                          linestyle=styles[i % len(styles)], linewidth=1.2, label=f"{ratio:.2f}")
        line.set_gid(f"hist|{gid}|{label}")
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(bottom=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count (log)")
    ax.legend(title="max/p99", fontsize=7, title_fontsize=7, frameon=False)



def checkpoints_from_store(store: ResultStore) -> list[CheckpointSpec]:
    """The checkpoint files of one model from the runs' manifests (MAP first, then Quant-Trim, then others).

    Layer groups only line up within one architecture, so the first model with both a MAP and a Quant-Trim
    file is taken (else the first model found); pass --checkpoints to choose others.
    """
    from harness.store.reader import checkpoint_recipes_from_manifest, model_from_name

    seen: dict[str, CheckpointSpec] = {}
    for manifest in store.manifests.values():
        cps = manifest.get("checkpoints")
        recipes = checkpoint_recipes_from_manifest(manifest)
        items = cps.items() if isinstance(cps, dict) else []
        for name, facts in items:
            path = Path(facts.get("path") or name) if isinstance(facts, dict) else Path(name)
            if path.suffix == ".onnx" and path.is_file() and str(path.resolve()) not in seen:
                seen[str(path.resolve())] = checkpoint_spec(path, recipes.get(name))
    by_model: dict[str, list[CheckpointSpec]] = {}
    for spec in seen.values():
        stem = spec.path.name[:-5] if spec.path.name.endswith(".onnx") else spec.path.stem
        by_model.setdefault(model_from_name(stem), []).append(spec)
    if not by_model:
        return []
    paired = [m for m, specs in sorted(by_model.items()) if {"map", "quanttrim"} <= {s.recipe for s in specs}]
    model = paired[0] if paired else sorted(by_model)[0]
    order = {"map": 0, "quanttrim": 1}
    return sorted(by_model[model], key=lambda s: (order.get(s.recipe, 2), s.label))




@register_figure("distributions", needs_store=False)
def _distributions(store: ResultStore | None, options: FigureOptions) -> Figure:
    specs = list(options.checkpoints) or (checkpoints_from_store(store) if store is not None else [])
    return distributions_figure(specs, activations=options.activations)
