"""Resolve and check the checkpoints a run benchmarks (the bundled defaults or user ONNX files)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.base import file_sha256
from harness.data.datasets import ASSETS_DIR

DEFAULT_CHECKPOINTS = ("resnet20-fmnist-map.onnx", "resnet20-fmnist-quanttrim.onnx")


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Checkpoint:
    name: str
    path: Path
    sha256: str
    input_name: str
    input_shape: tuple[int, ...]   # without batch
    calibration_table: Path | None = None
    qdq_path: Path | None = None
    #: The model card (harness.model.card.ModelCard) once one is attached; None until then.
    card: Any = None


def default_checkpoint_paths() -> list[Path]:
    paths = [ASSETS_DIR / n for n in DEFAULT_CHECKPOINTS]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise CheckpointError(
            "the bundled default checkpoints are missing (" + ", ".join(map(str, missing)) + "); "
            "reinstall the package, or rebuild them with the command in harness/assets/manifest.json"
        )
    return paths


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Check that ``path`` is a readable ONNX model and collect its facts."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of an .onnx file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the path of an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable ONNX model ({type(exc).__name__}); "
                              "export it with `python -m quanttrim export` or torch.onnx.export") from None
    if not model.graph.input or not model.graph.output:
        raise CheckpointError(f"checkpoint {path} has no graph inputs/outputs: not a usable ONNX model")
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise CheckpointError(f"checkpoint {path} has {len(inputs)} inputs; the harness feeds exactly one image tensor")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.dim_value > 0 else -1 for d in dims[1:])
    stem = path.name[:-len(".onnx")] if path.name.endswith(".onnx") else path.stem
    calib = path.with_name(stem + ".calib.json")
    qdq = path.with_name(stem + "-qdq.onnx")
    return Checkpoint(stem, path.resolve(), file_sha256(path), inputs[0].name, shape,
                      calib.resolve() if calib.exists() else None, qdq.resolve() if qdq.exists() else None)


def check_feedable(ckpt: Checkpoint, image_shape: tuple[int, ...], data_source: str) -> None:
    """The dataset's images (C, H, W) must fit the model input, else say both shapes."""
    if len(ckpt.input_shape) != len(image_shape) or any(
            m not in (-1, d) for m, d in zip(ckpt.input_shape, image_shape)):
        raise CheckpointError(
            f"checkpoint {ckpt.name} expects input {list(ckpt.input_shape)} (after the batch axis) but the "
            f"evaluation data ({data_source}) has images of shape {list(image_shape)}; export the model for "
            f"{'x'.join(map(str, image_shape))} inputs"
        )
