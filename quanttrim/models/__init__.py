"""Model zoo: created by name, any input channels and size, no torchvision needed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn

from quanttrim.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    factory: Callable[..., nn.Module]
    task: str  # "classification" or "segmentation"
    description: str


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, task: str = "classification", description: str = "") -> Callable:
    """Decorator registering a factory ``f(num_classes, in_channels, image_size, mean, std, width) -> nn.Module``."""
    if task not in ("classification", "segmentation"):
        raise ValueError(f"unknown task {task!r}; valid: classification, segmentation")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(name, ModelEntry(fn, task, description or (fn.__doc__ or "").strip().split("\n")[0]))
        return fn

    return deco


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    width: float = 1.0,
    task: str | None = None,
) -> nn.Module:
    """Create model ``name``; ``mean``/``std`` are baked into the model's input normalisation."""
    _load_zoo()
    entry = MODELS.get(name)
    if task is not None and entry.task != task:
        valid = [n for n in MODELS.names() if MODELS.get(n).task == task]
        raise ValueError(f"model {name!r} is a {entry.task} model but the dataset needs {task}; valid: {', '.join(valid)}")
    if num_classes < 1 or in_channels < 1 or image_size < 8:
        raise ValueError(f"need num_classes >= 1, in_channels >= 1, image_size >= 8 (got {num_classes}, {in_channels}, {image_size})")
    if width <= 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    mean = list(mean) if mean is not None else [0.5] * in_channels
    std = list(std) if std is not None else [0.5] * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need {in_channels} entries, got {len(mean)}/{len(std)}")
    return entry.factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size, mean=mean, std=std, width=width)


def model_names(task: str | None = None) -> list[str]:
    _load_zoo()
    return [n for n in MODELS.names() if task is None or MODELS.get(n).task == task]


_LOADED = False


def _load_zoo() -> None:
    """Import the zoo modules once (they register themselves)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from quanttrim.models import zoo  # noqa: F401
