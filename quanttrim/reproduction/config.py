"""Reproduction presets: what is trained and measured, sized for the machine it runs on."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from quanttrim.config import SNAP_CHOICES

GRANULARITIES = ("per_tensor", "per_channel")


@dataclass(frozen=True)
class ModelSpec:
    """One architecture of the study and the recipe pair it trains with (paper Tables 7–8)."""

    name: str                       # quanttrim model zoo name
    width: float = 1.0
    recipes: tuple[str, str] = ("map", "quanttrim")   # (baseline, Quant-Trim)


@dataclass(frozen=True)
class ReproductionConfig:
    """One reproduction. Every figure in its tables comes from seeds × calibration draws, never one seed."""

    name: str
    models: tuple[ModelSpec, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    calib_draws: tuple[int, ...] = (0, 1, 2)
    granularities: tuple[str, ...] = GRANULARITIES
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    epochs: int = 2
    train_limit: int | None = 10_000
    stop_after_steps: int | None = None
    lr: float = 1e-3
    #: Device profiles whose real backends (cpu) or emulated policies (the others) measure the checkpoints.
    devices: tuple[str, ...] = ("cpu", "hardware_a", "hardware_b", "hardware_d", "jetson_orin", "rk3588")
    #: Real backends measured (None = every one available here); the devices' emulated policies always run.
    backends: tuple[str, ...] | None = None
    eval_samples: int = 1000
    threads: int = 1
    quick_loop: bool = True         # fidelity only: no timing, but the quick protocol bounds validation
    #: Quant-Trim export weights (``quanttrim export --snap-weights``): auto = the exporter's default.
    snap_weights: str = "auto"

    def __post_init__(self) -> None:
        if not self.models or not self.seeds or not self.calib_draws:
            raise ValueError("a reproduction needs at least one model, one seed and one calibration draw")
        for g in self.granularities:
            if g not in GRANULARITIES:
                raise ValueError(f"unknown granularity {g!r}; valid: {', '.join(GRANULARITIES)}")
        if self.snap_weights not in SNAP_CHOICES:
            raise ValueError(f"unknown snap_weights {self.snap_weights!r}; valid: {', '.join(SNAP_CHOICES)}")
        if self.epochs < 1 or self.eval_samples < 1:
            raise ValueError("epochs and eval_samples must be >= 1")

    def with_overrides(self, **changes: object) -> "ReproductionConfig":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, ReproductionConfig] = {
    # The plumbing, in seconds: one tiny model, one seed, a few training steps (the CI test runs this).
    "ci": ReproductionConfig(
        name="ci", models=(ModelSpec("resnet20", width=0.25),), seeds=(0,), calib_draws=(0,),
        granularities=("per_tensor",), dataset="fashion-mnist-sample", epochs=1, train_limit=256,
        stop_after_steps=4, devices=("cpu",), eval_samples=64),
    # Runnable on 2 cores: three architectures, three seeds, three calibration draws, both granularities.
    "quick": ReproductionConfig(
        name="quick", models=(ModelSpec("resnet20"), ModelSpec("mobilenetv2", width=0.5),
                              ModelSpec("vit_small", recipes=("map-vit", "quanttrim-vit"))),
        epochs=2, train_limit=10_000, eval_samples=1000),
    "full": ReproductionConfig(
        name="full", models=(ModelSpec("resnet20"), ModelSpec("mobilenetv2", width=0.5),
                             ModelSpec("vit_small", recipes=("map-vit", "quanttrim-vit"))),
        epochs=8, train_limit=None, eval_samples=10_000, calib_draws=(0, 1, 2, 3, 4)),
}


def get_preset(name: str) -> ReproductionConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown reproduction preset {name!r}; valid: {', '.join(PRESETS)}") from None
