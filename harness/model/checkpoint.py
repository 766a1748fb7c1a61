"""The one model object: a checkpoint's identity (every file it is made of, hashed), inputs, outputs and opset.

Built once by the runner (``load_checkpoint``), carried to the worker as JSON (``to_dict``/``from_dict``), so
no later stage re-parses the model file and every stage feeds the same inputs. Inputs are the graph inputs that
are not initializers (old exporters list weights as inputs too). ONNX files and TFLite flatbuffers
(``.tflite``, read through ai_edge_litert's interpreter) are accepted.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from backends.base import ModelArtifact, TensorIO, file_sha256
from harness.data.datasets import ASSETS_DIR

DEFAULT_CHECKPOINTS = ("resnet20-fmnist-map.onnx", "resnet20-fmnist-quanttrim.onnx")
FORMATS = ("onnx", "tflite")


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, full shape (batch first) and numpy dtype name.

    A dimension is an int when the graph fixes it, the symbol's name (str) when symbolic, -1 when unknown.
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @property
    def static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the graph fixes (first dimension), or None when the batch is symbolic."""
        d = self.shape[0] if self.shape else None
        return d if isinstance(d, int) and d > 0 else None

    def int_shape(self) -> tuple[int, ...]:
        """The shape with every non-fixed dimension as -1 (what adapters see before fixing)."""
        return tuple(d if isinstance(d, int) and d > 0 else -1 for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(str(d["name"]), tuple(d["shape"]), str(d.get("dtype", "float32")))


@dataclass(frozen=True)
class Checkpoint:
    """A model the harness benchmarks, validated once.

    files: (path relative to the model's folder, sha256) for the model file and every external-data file it
    references; sha256: the identity, a digest over all of them (a re-exported ``.data`` file changes it).
    data_shapes: per input, the sample shape (without batch) the evaluation data fixed for symbolic dimensions
    (empty until ``with_data_shapes``); backends that need static shapes compile for exactly these.
    """

    name: str
    path: Path
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    format: str = "onnx"
    files: tuple[tuple[str, str], ...] = ()
    opset: int | None = None
    calibration_table: Path | None = None
    qdq_path: Path | None = None
    #: The model card (harness.model.card.ModelCard) once one is attached; None until then.
    card: Any = None
    data_shapes: tuple[tuple[str, tuple[int, ...]], ...] = field(default=())

    # -- the first input/output, for code that feeds one image tensor -------------------------------------
    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's shape without the batch axis; fixed from the data when known, else -1 for symbols."""
        fixed = dict(self.data_shapes).get(self.input_name)
        return tuple(fixed) if fixed is not None else self.inputs[0].int_shape()[1:]

    @property
    def output_name(self) -> str:
        return self.outputs[0].name

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @property
    def fixed_batch(self) -> int | None:
        """The batch every input fixes, or None when the batch axis is symbolic."""
        fixed = {t.fixed_batch for t in self.inputs}
        return None if None in fixed or len(fixed) != 1 else fixed.pop()

    def with_data_shapes(self, sample_shapes: Mapping[str, Sequence[int]]) -> "Checkpoint":
        """A copy with each input's symbolic dimensions fixed from the data's sample shape (without batch).

        Raises CheckpointError when the data lacks an input, or disagrees with a dimension the graph fixes.
        """
        fixed = []
        for t in self.inputs:
            if t.name not in sample_shapes:
                raise CheckpointError(f"checkpoint {self.name} needs input {t.name!r} but the data has "
                                      f"{sorted(sample_shapes)}; give one array per model input")
            got = tuple(int(d) for d in sample_shapes[t.name])
            want = t.shape[1:]
            if len(got) != len(want) or any(isinstance(w, int) and w > 0 and w != g for w, g in zip(want, got)):
                raise CheckpointError(
                    f"checkpoint {self.name} expects input {t.name} of shape {list(want)} (after the batch axis) "
                    f"but the data has samples of shape {list(got)}; resize the data to fit (or export the model "
                    f"for {'x'.join(map(str, got))} inputs)")
            if any(g < 1 for g in got):
                raise CheckpointError(f"input {t.name} data has a zero-sized dimension {list(got)}")
            fixed.append((t.name, got))
        return replace(self, data_shapes=tuple(fixed))

    def artifact(self) -> ModelArtifact:
        """The model as handed to backends: every input with its data-fixed shape (batch -1), every output."""
        fixed = dict(self.data_shapes)
        ins = tuple(TensorIO(t.name, (-1,) + tuple(fixed[t.name]) if t.name in fixed else t.int_shape(), t.dtype)
                    for t in self.inputs)
        outs = tuple(TensorIO(t.name, t.int_shape(), t.dtype) for t in self.outputs)
        return ModelArtifact(path=self.path, name=self.name, sha256=self.sha256, input_name=self.input_name,
                             input_shape=tuple(ins[0].shape[1:]), output_name=self.output_name,
                             calibration_table=self.calibration_table, qdq_path=self.qdq_path,
                             inputs=ins, outputs=outs, format=self.format)

    # -- JSON ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        card = self.card.to_dict() if self.card is not None and hasattr(self.card, "to_dict") else self.card
        return {
            "name": self.name, "path": str(self.path), "format": self.format, "sha256": self.sha256,
            "files": [{"path": p, "sha256": h} for p, h in self.files],
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "opset": self.opset,
            "calibration_table": str(self.calibration_table) if self.calibration_table else None,
            "qdq_path": str(self.qdq_path) if self.qdq_path else None,
            "card": card,
            "data_shapes": {n: list(s) for n, s in self.data_shapes},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Checkpoint":
        card = d.get("card")
        if isinstance(card, Mapping):
            try:
                from harness.model.card import ModelCard  # owned by the model-card work; optional until it lands
                card = ModelCard.from_dict(card)
            except ImportError:
                pass
        return cls(
            name=str(d["name"]), path=Path(d["path"]), sha256=str(d["sha256"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            format=str(d.get("format", "onnx")),
            files=tuple((f["path"], f["sha256"]) for f in d.get("files", ())),
            opset=d.get("opset"),
            calibration_table=Path(d["calibration_table"]) if d.get("calibration_table") else None,
            qdq_path=Path(d["qdq_path"]) if d.get("qdq_path") else None,
            card=card,
            data_shapes=tuple((n, tuple(s)) for n, s in (d.get("data_shapes") or {}).items()),
        )


#: Pre-tuned TVM MetaSchedule databases of the default checkpoints (backends.tvm_tuning entries; read-only).
BUNDLED_TVM_TUNING_DIR = ASSETS_DIR / "tvm-tuning"


def default_checkpoint_paths() -> list[Path]:
    paths = [ASSETS_DIR / n for n in DEFAULT_CHECKPOINTS]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise CheckpointError(
            "the bundled default checkpoints are missing (" + ", ".join(map(str, missing)) + "); "
            "reinstall the package, or rebuild them with the command in harness/assets/manifest.json"
        )
    return paths


def identity_digest(files: Sequence[tuple[str, str]]) -> str:
    """The identity of a model made of these (relative path, sha256) files.

    One file: its own sha256 (checkable with ``sha256sum``). Several (ONNX external data): sha256 over the
    sorted (path, sha256) pairs, so changing, adding or renaming any file changes the identity.
    """
    if len(files) == 1:
        return files[0][1]
    h = hashlib.sha256()
    for rel, digest in sorted(files):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Check that ``path`` is a readable ONNX or TFLite model and collect its facts (inputs, outputs, files).

    Raises CheckpointError saying what is wrong and how to fix it (missing file, unreadable model, missing
    external-data file, no inputs).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of an .onnx or .tflite file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the path of an .onnx or .tflite file")
    if path.suffix.lower() == ".tflite":
        return _load_tflite(path)
    return _load_onnx(path)


def _stem(path: Path) -> str:
    return path.name[:-len(".onnx")] if path.name.endswith(".onnx") else path.stem


def _load_onnx(path: Path) -> Checkpoint:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable ONNX model ({type(exc).__name__}); "
                              "export it with `python -m quanttrim export` or torch.onnx.export") from None
    graph = model.graph
    weights = {i.name for i in graph.initializer}
    # Old exporters list every weight as a graph input too: those are not inputs the harness feeds.
    inputs = tuple(_onnx_spec(v) for v in graph.input if v.name not in weights)
    outputs = tuple(_onnx_spec(v) for v in graph.output)
    if not inputs or not outputs:
        raise CheckpointError(f"checkpoint {path} has {len(inputs)} inputs (weights excluded) and {len(outputs)} "
                              "outputs: not a model the harness can feed")
    files = [(path.name, file_sha256(path))]
    for rel in external_data_files(model):
        data = path.parent / rel
        if not data.is_file():
            raise CheckpointError(f"checkpoint {path} keeps weights in external file {rel} which is missing "
                                  f"(looked for {data}); copy it beside the model")
        files.append((rel, file_sha256(data)))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    stem = _stem(path)
    calib = path.with_name(stem + ".calib.json")
    qdq = path.with_name(stem + "-qdq.onnx")
    return Checkpoint(stem, path.resolve(), identity_digest(files), inputs, outputs, "onnx", tuple(files), opset,
                      calib.resolve() if calib.exists() else None, qdq.resolve() if qdq.exists() else None)


def external_data_files(model: Any) -> list[str]:
    """Relative paths of every external-data file the model's tensors reference (subgraphs included), sorted."""
    from onnx import TensorProto
    from onnx.external_data_helper import _get_all_tensors  # the helper onnx itself uses to load them

    found = set()
    for tensor in _get_all_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL:
            loc = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if loc:
                found.add(loc)
    return sorted(found)


def _onnx_spec(value: Any) -> TensorSpec:
    from onnx.helper import tensor_dtype_to_np_dtype

    tt = value.type.tensor_type
    dims: list[int | str] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(str(d.dim_param))
        else:
            dims.append(-1)
    try:
        dtype = tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "float32"
    except Exception:  # e.g. a sequence/map output: no numpy dtype
        dtype = "object"
    return TensorSpec(value.name, tuple(dims), dtype)


def _load_tflite(path: Path) -> Checkpoint:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise CheckpointError(f"checkpoint {path} is a .tflite model and reading it needs ai-edge-litert; "
                              'install it with: pip install ".[litert]"') from None
    try:
        interp = Interpreter(model_path=str(path))
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable .tflite model ({type(exc).__name__}: "
                              f"{exc})") from None

    def spec(d: Mapping[str, Any]) -> TensorSpec:
        sig = d.get("shape_signature")
        shape = tuple(int(x) for x in (sig if sig is not None and len(sig) else d["shape"]))
        return TensorSpec(str(d["name"]), shape, d["dtype"].__name__ if isinstance(d["dtype"], type)
                          else str(d["dtype"]))

    inputs = tuple(spec(d) for d in interp.get_input_details())
    outputs = tuple(spec(d) for d in interp.get_output_details())
    if not inputs or not outputs:
        raise CheckpointError(f"checkpoint {path} has no inputs or outputs")
    files = ((path.name, file_sha256(path)),)
    return Checkpoint(path.stem, path.resolve(), identity_digest(files), inputs, outputs, "tflite", files, None)


def check_feedable(ckpt: Checkpoint, image_shape: tuple[int, ...], data_source: str) -> None:
    """The demo dataset feeds one image tensor (C, H, W): the checkpoint must take exactly one input of that shape."""
    if len(ckpt.inputs) != 1:
        raise CheckpointError(
            f"checkpoint {ckpt.name} has {len(ckpt.inputs)} inputs ({', '.join(ckpt.input_names)}) but the "
            f"evaluation data ({data_source}) is one image tensor; give one array per input")
    try:
        ckpt.with_data_shapes({ckpt.input_name: image_shape})
    except CheckpointError as exc:
        # The usual cause is running without --data: the built-in default is 1x28x28 Fashion-MNIST.
        raise CheckpointError(f"{exc} (evaluation data: {data_source}); to feed your own: --data DIR (a folder of "
                              "images, resized and converted as the model card says) or --data FILE.npz") from None
