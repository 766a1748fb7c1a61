"""The model card: how to feed a model (per input) and how to read it (per output), as a small TOML file.

A card lives beside the model as ``<checkpoint stem>.card.toml`` (picked up by itself) or is passed with
``--model-card CARD.toml``. Without one, :func:`infer_card` infers what the graph tells (static H×W, a final
Softmax, a 2-D float output) and says what it assumed in ``ModelCard.inferred``. The effective card goes into
the run's manifest, so a run repeats exactly. Example::

    [[inputs]]
    name = "x"            # graph input name
    layout = "NCHW"       # NCHW | NHWC | other
    size = [48, 192]      # H, W the images are resized to
    colour = "bgr"        # rgb | bgr | gray
    scale = 0.00392156862745098   # pixel * scale, then (· - mean) / std
    mean = [0.5, 0.5, 0.5]
    std = [0.5, 0.5, 0.5]
    resize = "stretch"    # stretch | letterbox | crop
    dtype = "float32"

    [[outputs]]
    name = "save_infer_model/scale_0.tmp_1"
    role = "probabilities"   # logits | probabilities | detection | mask | sequence | embedding | regression | raw
    batch_axis = 0
    class_axis = -1

Inputs and outputs not named in a card are inferred; keys not given take the inferred (or default) value.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from devices.choices import did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROLES = ("logits", "probabilities", "detection", "mask", "sequence", "embedding", "regression", "raw")
LAYOUTS = ("NCHW", "NHWC", "other")
COLOURS = ("rgb", "bgr", "gray")
RESIZES = ("stretch", "letterbox", "crop")
DTYPES = ("float32", "float16", "uint8", "int8", "int32", "int64")
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
#: How a detection output's fields are laid out along its class_axis (harness.scoring.detection reads them):
#: 4 box values + K class scores; + an objectness score before them; rows already past NMS (box, score, class).
DETECTION_LAYOUTS = ("boxes4+scoresK", "boxes4+obj+scoresK", "boxes4+score+class")
CARD_SUFFIX = ".card.toml"


class CardError(ValueError):
    """A model card is unusable; the message names the file, the field and the valid choices."""


@dataclass(frozen=True)
class InputCard:
    """How images become one model input: resized to ``size`` (H, W), colour order, x*scale, (x-mean)/std."""

    name: str
    layout: str = "NCHW"
    size: tuple[int, int] | None = None
    colour: str | None = "rgb"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    resize: str = "stretch"
    dtype: str = "float32"

    @property
    def channels(self) -> int | None:
        return {"rgb": 3, "bgr": 3, "gray": 1}.get(self.colour or "")


@dataclass(frozen=True)
class OutputCard:
    """What one output is: its role, the batch axis and the axis of class scores / channels."""

    name: str
    role: str = "raw"
    batch_axis: int = 0
    class_axis: int = -1
    box_format: str | None = None
    #: How detection fields are laid out along class_axis: one of DETECTION_LAYOUTS, e.g. "boxes4+scoresK".
    detection_layout: str | None = None
    #: CTC blank class index of a `sequence` output (greedy decoding drops it).
    blank_index: int | None = None


@dataclass(frozen=True)
class ModelCard:
    inputs: tuple[InputCard, ...]
    outputs: tuple[OutputCard, ...]
    #: What was assumed rather than read from a card file, one sentence each (printed once by the runner).
    inferred: tuple[str, ...] = ()
    #: Where the card came from: a file path, or "inferred".
    source: str = "inferred"

    def input(self, name: str) -> InputCard:
        return _by_name(self.inputs, name, "input")

    def output(self, name: str) -> OutputCard:
        return _by_name(self.outputs, name, "output")

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [_clean(asdict(i)) for i in self.inputs],
                "outputs": [_clean(asdict(o)) for o in self.outputs],
                "inferred": list(self.inferred), "source": self.source}

    def to_toml(self) -> str:
        """The card as a card file: pass it back with --model-card to feed and read the model exactly so again."""
        import tomli_w

        def entries(items: Sequence[Any]) -> list[dict[str, Any]]:
            return [{k: v for k, v in _clean(asdict(i)).items() if v is not None} for i in items]

        header = "".join(f"# assumed: {n}\n" for n in self.inferred)
        return header + tomli_w.dumps({"inputs": entries(self.inputs), "outputs": entries(self.outputs)})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "card") -> "ModelCard":
        inputs = tuple(_input_from(d, origin, i) for i, d in enumerate(data.get("inputs", ())))
        outputs = tuple(_output_from(d, origin, i) for i, d in enumerate(data.get("outputs", ())))
        return cls(inputs, outputs, tuple(data.get("inferred", ())), str(data.get("source", origin)))


def _by_name(items: Sequence[Any], name: str, kind: str) -> Any:
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"the model card has no {kind} {name!r}; it has: {', '.join(i.name for i in items)}")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


# ------------------------------------------------------------------------------------------------
# Reading and validating a card file
# ------------------------------------------------------------------------------------------------
def _choice(value: Any, valid: Sequence[str], where: str, key: str, lower: bool = True) -> str:
    text = str(value).lower() if lower else str(value)
    allowed = [v.lower() for v in valid] if lower else list(valid)
    if text not in allowed:
        raise CardError(f"{where}: {key} = {value!r} is not valid; {did_you_mean(value, valid)}"
                        f"choose one of {', '.join(valid)}")
    return valid[allowed.index(text)]


def _floats(value: Any, where: str, key: str) -> tuple[float, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    try:
        out = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise CardError(f"{where}: {key} must be a number or a list of numbers, got {value!r}") from None
    if not out:
        raise CardError(f"{where}: {key} must not be empty")
    return out


def _check_keys(d: Mapping[str, Any], cls: type, where: str) -> None:
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(valid))
    if unknown:
        hint = did_you_mean(unknown[0], valid) if len(unknown) == 1 else ""   # one typo: name its fix
        raise CardError(f"{where}: unknown key(s) {', '.join(unknown)}; {hint}valid keys: {', '.join(valid)}")
    if "name" not in d:
        raise CardError(f"{where}: every entry needs a name (the graph's tensor name)")


def _input_from(d: Mapping[str, Any], origin: str, index: int, base: InputCard | None = None) -> InputCard:
    where = f"{origin} [[inputs]] #{index + 1}"
    _check_keys(d, InputCard, where)
    card = base or InputCard(name=str(d["name"]))
    values: dict[str, Any] = {"name": str(d["name"])}
    if "layout" in d:
        values["layout"] = _choice(d["layout"], LAYOUTS, where, "layout", lower=False) if d["layout"] in LAYOUTS \
            else _choice(str(d["layout"]).upper(), LAYOUTS, where, "layout", lower=False)
    if "size" in d:
        size = d["size"]
        if size is not None:
            if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0
                                                                               for v in size)):
                raise CardError(f"{where}: size must be [height, width] in pixels, got {size!r}")
            size = (int(size[0]), int(size[1]))
        values["size"] = size
    if "colour" in d:
        values["colour"] = None if d["colour"] in (None, "none") else _choice(d["colour"], COLOURS, where, "colour")
    if "scale" in d:
        values["scale"] = _floats(d["scale"], where, "scale")[0]
    for key in ("mean", "std"):
        if key in d:
            values[key] = _floats(d[key], where, key)
    if "std" in values and any(s == 0 for s in values["std"]):
        raise CardError(f"{where}: std must not contain 0")
    if "resize" in d:
        values["resize"] = _choice(d["resize"], RESIZES, where, "resize")
    if "dtype" in d:
        values["dtype"] = _choice(d["dtype"], DTYPES, where, "dtype")
    return replace(card, **values)


def _output_from(d: Mapping[str, Any], origin: str, index: int, base: OutputCard | None = None) -> OutputCard:
    where = f"{origin} [[outputs]] #{index + 1}"
    _check_keys(d, OutputCard, where)
    card = base or OutputCard(name=str(d["name"]))
    values: dict[str, Any] = {"name": str(d["name"])}
    if "role" in d:
        values["role"] = _choice(d["role"], ROLES, where, "role")
    for key in ("batch_axis", "class_axis", "blank_index"):
        if key in d and d[key] is not None:
            if not isinstance(d[key], int) or isinstance(d[key], bool):
                raise CardError(f"{where}: {key} must be an integer axis/index, got {d[key]!r}")
            values[key] = d[key]
    if d.get("box_format") is not None:
        values["box_format"] = _choice(d["box_format"], BOX_FORMATS, where, "box_format")
    if d.get("detection_layout") is not None:
        values["detection_layout"] = _choice(d["detection_layout"], DETECTION_LAYOUTS, where, "detection_layout")
    return replace(card, **values)


def read_card_file(path: Path | str) -> dict[str, Any]:
    """The raw TOML of a card, with the file named in every error."""
    path = Path(path)
    if not path.is_file():
        raise CardError(f"model card {path} does not exist; pass a TOML file (see harness/model/card.py)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CardError(f"model card {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"inputs", "outputs"})
    if unknown:
        raise CardError(f"model card {path}: unknown table(s) {', '.join(unknown)}; valid: [[inputs]], [[outputs]]")
    for key in ("inputs", "outputs"):
        if not isinstance(data.get(key, []), list):
            raise CardError(f"model card {path}: {key} must be an array of tables ([[{key}]])")
    return data


def load_card(path: Path | str) -> ModelCard:
    """A card file on its own (not merged with a model): the entries exactly as written, validated."""
    data = read_card_file(path)
    return ModelCard.from_dict({**data, "source": str(Path(path).resolve())}, origin=str(path))


def card_path_beside(model_path: Path | str) -> Path:
    """``<stem>.card.toml`` beside the model (the stem without .onnx/.tflite)."""
    p = Path(model_path)
    return p.with_name(p.stem + CARD_SUFFIX)


# ------------------------------------------------------------------------------------------------
# Inference from the graph (and, when given, from the FP32 reference outputs)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    name: str
    shape: tuple[Any, ...]
    dtype: str


def _as_specs(items: Iterable[Any]) -> list[_Spec]:
    return [_Spec(i.name, tuple(i.shape), str(i.dtype)) for i in items]


def graph_specs(checkpoint: Any) -> tuple[list[_Spec], list[_Spec]]:
    """(inputs, outputs) of a checkpoint: its TensorSpecs when it has them, else read from the ONNX graph."""
    if getattr(checkpoint, "inputs", None) and getattr(checkpoint, "outputs", None):
        return _as_specs(checkpoint.inputs), _as_specs(checkpoint.outputs)
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(checkpoint.path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}

    def spec(v: Any) -> _Spec:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.dim_value > 0 else (d.dim_param or -1) for d in t.shape.dim)
        return _Spec(v.name, dims, str(tensor_dtype_to_np_dtype(t.elem_type)) if t.elem_type else "float32")

    return [spec(v) for v in graph.input if v.name not in inits], [spec(v) for v in graph.output]


#: Ops that keep a Softmax's meaning when they follow it (a Softmax behind them still makes probabilities).
_PASS_THROUGH = {"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Cast"}


def final_ops(model_path: Path | str) -> dict[str, tuple[str, int | None]]:
    """The op that makes each graph output, looking through reshapes/transposes: {name: (op_type, axis)}, the axis
    of a Softmax (its ``axis`` attribute, default -1, carried through any Transpose after it), else None."""
    import onnx

    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception:
        return {}
    producer = {o: n for n in graph.node for o in n.output}
    found: dict[str, tuple[str, int | None]] = {}
    for out in graph.output:
        node, perms = producer.get(out.name), []
        while node is not None and node.op_type in _PASS_THROUGH and node.input:
            if node.op_type == "Transpose":
                perms.append(next((list(a.ints) for a in node.attribute if a.name == "perm"), None))
            node = producer.get(node.input[0])
        if node is None:
            continue
        axis = None
        if node.op_type == "Softmax":
            axis = int(next((a.i for a in node.attribute if a.name == "axis"), -1))
            for perm in reversed(perms):   # in graph order: input axis a becomes output axis perm.index(a)
                if perm:
                    axis = perm.index(axis % len(perm))
        found[out.name] = (node.op_type, axis)
    return found


#: TFLite ops that keep a Softmax's meaning when they follow it (the ONNX _PASS_THROUGH's counterparts).
_TFLITE_PASS_THROUGH = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "IDENTITY"}


def tflite_final_ops(model_path: Path | str) -> dict[str, tuple[str, int | None]]:
    """As :func:`final_ops` for a .tflite model: {output name: ("Softmax", -1)} for outputs a SOFTMAX makes (TFLite's
    softmax is over the last axis), other producers by their TFLite op name; {} when LiteRT cannot read it."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(model_path))
        ops = interp._get_ops_details()   # the only listing of ops the Python API offers
    except Exception:
        return {}
    producer = {int(t): op for op in ops for t in op["outputs"]}
    found: dict[str, tuple[str, int | None]] = {}
    for out in interp.get_output_details():
        op = producer.get(int(out["index"]))
        while op is not None and op["op_name"] in _TFLITE_PASS_THROUGH and len(op["inputs"]):
            op = producer.get(int(op["inputs"][0]))
        if op is not None:
            found[out["name"]] = ("Softmax", -1) if op["op_name"] == "SOFTMAX" else (op["op_name"], None)
    return found


def _is_float(dtype: str) -> bool:
    return dtype.startswith("float") or dtype in ("bfloat16",)


def _infer_input(spec: _Spec) -> tuple[InputCard, str]:
    shape = spec.shape
    static = lambda d: isinstance(d, int) and d > 0  # noqa: E731
    dtype = spec.dtype if spec.dtype in DTYPES else "float32"
    scale = 1.0 if dtype in ("uint8", "int8") else 1.0 / 255.0
    if len(shape) == 4 and static(shape[1]) and shape[1] in (1, 3):
        layout, channels, hw = "NCHW", shape[1], shape[2:4]
    elif len(shape) == 4 and static(shape[3]) and shape[3] in (1, 3):
        layout, channels, hw = "NHWC", shape[3], shape[1:3]
    else:
        card = InputCard(spec.name, layout="other", size=None, colour=None, scale=1.0, dtype=dtype)
        return card, (f"input {spec.name} {list(shape)} is not an image tensor: arrays are fed as they are "
                      f"(from an .npz/.npy), cast to {dtype}")
    size = (int(hw[0]), int(hw[1])) if all(static(d) for d in hw) else None
    colour = "rgb" if channels == 3 else "gray"
    card = InputCard(spec.name, layout=layout, size=size, colour=colour, scale=scale, dtype=dtype)
    size_text = f"{size[0]}x{size[1]} from the graph" if size else \
        "dynamic H×W: images keep their size when all agree, else the most common size (stretch)"
    return card, (f"input {spec.name}: {layout}, {colour}, pixel x {'1' if scale == 1 else '1/255'}, no mean/std, "
                  f"{size_text}, resize stretch, {dtype} (assumed; write a card to say otherwise)")


def _sums_to_one(array: Any, axis: int) -> bool:
    import numpy as np

    a = np.asarray(array, dtype=np.float64)
    if a.ndim < 2 or a.size == 0 or not np.all(np.isfinite(a)) or a.min() < 0:
        return False
    return bool(np.allclose(a.sum(axis=axis), 1.0, atol=1e-3))


def _class_role(spec: _Spec, class_axis: int) -> tuple[str, str]:
    """The role of a score distribution over ``class_axis`` by what else the output holds: one vector per image
    (N, K) → probabilities; per position (N, T, K) → sequence; per pixel (N, K, H, W) → mask."""
    rank = len(spec.shape)
    axis = class_axis % rank if rank else 0
    other = [d for i, d in enumerate(spec.shape) if i not in (0, axis)]
    if all(d == 1 for d in other):
        return "probabilities", "one score vector per image"
    if rank == 3:
        return "sequence", "one score vector per position (N, T, K): greedy decoding, no blank_index"
    if rank == 4:
        return "mask", "one score vector per pixel"
    return "raw", f"{rank}-D scores, no role fits"


def _infer_output(spec: _Spec, ending: tuple[str, int | None] | None, reference: Any | None,
                  image_layout: str | None) -> tuple[OutputCard, str]:
    op, softmax_axis = ending if ending else (None, None)
    why = None
    if softmax_axis is not None:
        why, class_axis = f"the graph ends in a Softmax over axis {softmax_axis}", softmax_axis
    elif reference is not None and _is_float(spec.dtype) and _sums_to_one(reference, -1):
        why, class_axis = "its rows sum to 1 in the FP32 reference", -1
    if why is not None:
        role, what = _class_role(spec, class_axis)
        if role != "raw":
            return (OutputCard(spec.name, role, class_axis=class_axis),
                    f"output {spec.name}: {role} ({why}; {what})")
    if len(spec.shape) == 2 and _is_float(spec.dtype):
        return OutputCard(spec.name, "logits"), f"output {spec.name}: logits (a 2-D float output)"
    # A 4-D output of an image model keeps the input's layout: its channels are on axis 1 (NCHW) or -1 (NHWC).
    channel_axis = {"NCHW": 1, "NHWC": -1}.get(image_layout or "") if len(spec.shape) == 4 else None
    if channel_axis is not None and op == "Sigmoid" and spec.shape[channel_axis] == 1:
        return (OutputCard(spec.name, "mask", class_axis=channel_axis),
                f"output {spec.name}: mask (a one-channel Sigmoid map: binary, > 0.5; channel axis "
                f"{channel_axis} as the input's {image_layout})")
    where = f"; channel axis {channel_axis} as the input's {image_layout}" if channel_axis is not None else ""
    return (OutputCard(spec.name, "raw", class_axis=channel_axis if channel_axis is not None else -1),
            f"output {spec.name} {list(spec.shape)}: raw (no role inferred; scored by SNR/MSE/cosine only — "
            f"set its role in a card{where})")


def infer_card(checkpoint: Any, reference_outputs: Mapping[str, Any] | Sequence[Any] | None = None) -> ModelCard:
    """What can be inferred for every input and output of ``checkpoint``, each assumption said once.

    ``reference_outputs`` (FP32 outputs by name or in graph order), when given, lets rows that sum to 1 mark
    probabilities on graphs without a visible Softmax (e.g. a TFLite model).
    """
    inputs, outputs = graph_specs(checkpoint)
    fmt = getattr(checkpoint, "format", "onnx")
    endings = final_ops(checkpoint.path) if fmt == "onnx" else tflite_final_ops(checkpoint.path)
    if reference_outputs is not None and not isinstance(reference_outputs, Mapping):
        reference_outputs = {o.name: r for o, r in zip(outputs, reference_outputs)}
    notes: list[str] = []
    in_cards, out_cards = [], []
    for spec in inputs:
        card, note = _infer_input(spec)
        in_cards.append(card)
        notes.append(note)
    image_layout = next((c.layout for c in in_cards if c.layout in ("NCHW", "NHWC")), None)
    for spec in outputs:
        ref = (reference_outputs or {}).get(spec.name)
        card, note = _infer_output(spec, endings.get(spec.name), ref, image_layout)
        out_cards.append(card)
        notes.append(note)
    return ModelCard(tuple(in_cards), tuple(out_cards), tuple(notes), "inferred")


def effective_card(checkpoint: Any, card_path: Path | str | None = None,
                   reference_outputs: Mapping[str, Any] | Sequence[Any] | None = None) -> ModelCard:
    """The card a run uses: the inferred card, overridden entry by entry by the card file.

    The file is ``card_path`` when given, else ``<stem>.card.toml`` beside the model when it exists.
    Entries the file names but the graph lacks are an error naming the graph's tensors.
    """
    base = infer_card(checkpoint, reference_outputs)
    path = Path(card_path) if card_path else card_path_beside(checkpoint.path)
    if card_path is None and not path.is_file():
        return base
    data = read_card_file(path)
    origin = str(path)
    inputs, outputs = list(base.inputs), list(base.outputs)
    given: set[str] = set()
    for kind, items, parse in (("inputs", inputs, _input_from), ("outputs", outputs, _output_from)):
        names = [i.name for i in items]
        for index, entry in enumerate(data.get(kind, [])):
            name = entry.get("name")
            if name not in names:
                raise CardError(f"{origin} [[{kind}]] #{index + 1}: the model has no {kind[:-1]} {name!r}; "
                                f"its {kind}: {', '.join(names)}")
            items[names.index(name)] = parse(entry, origin, index, items[names.index(name)])
            given.add(name)
    notes = tuple(n for n in base.inferred if not any(n.startswith(f"{k} {g}") for g in given
                                                       for k in ("input", "output")))
    return ModelCard(tuple(inputs), tuple(outputs), notes, str(path.resolve()))
