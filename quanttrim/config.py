"""Frozen, validated configuration dataclasses (torchao style): behaviour lives elsewhere, in code
that takes a config. Times are in (fractional) epochs so that one recipe works for any run length."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from devices.choices import did_you_mean, unknown_name

OPTIMIZERS = ("adamw", "sgd")
#: ``quanttrim export --snap-weights``: auto (the exporter's default, see quanttrim.export.resolve_snap), yes, no.
SNAP_CHOICES = ("auto", "yes", "no")


def _check_prob(name: str, v: float, lo_open: bool = True, hi_closed: bool = True) -> None:
    ok = (0.0 < v if lo_open else 0.0 <= v) and (v <= 1.0 if hi_closed else v < 1.0)
    if not ok:
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}0, 1{']' if hi_closed else ')'}, got {v}")


@dataclass(frozen=True)
class QuantConfig:
    """Progressive fake quantization (§3.1, §3.3).

    ``enabled`` False means λ ≡ 0 (MAP / FP32 / RP-only); observers may still run (``observe``) so the
    learned activation ranges can be exported as a calibration table for every checkpoint.
    """

    enabled: bool = True
    observe: bool = True
    weight_bits: int = 8
    act_bits: int = 8
    weight_per_channel: bool = False   # per-tensor is what every backend supports; per-channel is opt-in
    act_per_channel: bool = False
    weight_p_hi: float = 0.999         # weights: EMA of Q_|w|(p_hi)
    act_p_lo: float = 0.001            # activations: EMA of Q_x(p_lo), Q_x(p_hi)
    act_p_hi: float = 0.999
    momentum: float = 1e-2             # μ per observer update (Table 7: 1e-2 CIFAR, 1e-3 segmentation)
    eps: float = 1e-6                  # floor on the scale
    max_samples: int = 100_000         # S_max
    observe_every: int = 4             # steps between observer updates (μ is corrected to keep the time constant)
    fold_bn: bool = True               # quantize W·γ/σ for Conv→BN pairs: the deployed graph folds BN first
    quantize_weights: bool = True
    quantize_activations: bool = True
    quantize_input: bool = True
    warmup: float = 10.0               # E_w
    ramp_end: float = 50.0             # E_f
    horizon: float = 20.0              # H
    alpha_max: float = 1.0             # final blend cap (≈0.8 for ViTs)
    fast_kernels: bool = True          # fused PyTorch fake-quant kernels in training (export never uses them)

    def __post_init__(self) -> None:
        for name in ("weight_bits", "act_bits"):
            b = getattr(self, name)
            if not isinstance(b, int) or not 2 <= b <= 8:
                raise ValueError(f"{name} must be an integer in [2, 8], got {b!r}")
        _check_prob("weight_p_hi", self.weight_p_hi)
        _check_prob("act_p_hi", self.act_p_hi)
        _check_prob("act_p_lo", self.act_p_lo, lo_open=False, hi_closed=False)
        if self.act_p_lo >= self.act_p_hi:
            raise ValueError(f"act_p_lo ({self.act_p_lo}) must be < act_p_hi ({self.act_p_hi})")
        _check_prob("momentum", self.momentum)
        _check_prob("alpha_max", self.alpha_max, lo_open=False)
        if self.eps <= 0:
            raise ValueError("eps must be > 0")
        if self.max_samples < 100:
            raise ValueError(f"max_samples must be >= 100, got {self.max_samples}")
        if self.observe_every < 1:
            raise ValueError("observe_every must be >= 1")
        if self.warmup < 0 or self.ramp_end < self.warmup or self.horizon < 0:
            raise ValueError(
                f"need 0 <= warmup <= ramp_end and horizon >= 0; got warmup={self.warmup}, "
                f"ramp_end={self.ramp_end}, horizon={self.horizon}"
            )


@dataclass(frozen=True)
class PruneConfig:
    """Reverse pruning (§3.2): from ``start`` on, every ``every`` epochs, clip w to ±τ, τ = EMA_β(Q_|w|(p_clip))."""

    enabled: bool = True
    p_clip: float = 0.90
    every: float = 5.0                 # K
    beta: float = 0.5                  # EMA momentum of τ (1.0 = use the fresh quantile)
    per_channel: bool = False
    start: float | None = None         # None: the fake-quant warmup E_w
    final_pin: bool = True             # pin once more after the last step so max|w| ≤ τ in the checkpoint

    def __post_init__(self) -> None:
        _check_prob("p_clip", self.p_clip)
        _check_prob("beta", self.beta)
        if self.every <= 0:
            raise ValueError(f"every (K) must be > 0 epochs, got {self.every}")
        if self.start is not None and self.start < 0:
            raise ValueError("start must be >= 0")


@dataclass(frozen=True)
class Recipe:
    """A named training recipe: optimizer settings plus the quantization and pruning configs."""

    name: str
    quant: QuantConfig = field(default_factory=QuantConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    optimizer: str = "adamw"
    lr: float = 3e-4
    weight_decay: float = 0.01
    sgd_momentum: float = 0.9
    batch_size: int = 128
    reference_epochs: float = 100.0    # the run length the schedule times were written for
    description: str = ""

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(unknown_name("optimizer", self.optimizer, OPTIMIZERS))
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.reference_epochs <= 0:
            raise ValueError("reference_epochs must be > 0")

    def scaled(self, epochs: float) -> "Recipe":
        """The same recipe with E_w, E_f, H, K and the pruning start scaled to an ``epochs``-long run."""
        f = epochs / self.reference_epochs
        q = dataclasses.replace(
            self.quant, warmup=self.quant.warmup * f, ramp_end=self.quant.ramp_end * f, horizon=self.quant.horizon * f
        )
        p = dataclasses.replace(
            self.prune, every=self.prune.every * f, start=None if self.prune.start is None else self.prune.start * f
        )
        return dataclasses.replace(self, quant=q, prune=p, reference_epochs=float(epochs))

    def with_overrides(self, overrides: dict[str, str]) -> "Recipe":
        """Apply ``{"quant.act_p_hi": "0.9999", "lr": "1e-3"}`` style overrides (values parsed by field type)."""
        r = self
        for key, raw in overrides.items():
            r = _override(r, key.split("."), raw, key)
        return r

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        d = dict(d)
        return cls(**{**d, "quant": QuantConfig(**d["quant"]), "prune": PruneConfig(**d["prune"])})


def _parse(raw: str, current: Any, key: str) -> Any:
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: expected a boolean, got {raw!r}")
    if raw.lower() == "none":
        return None
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float) or current is None:
        return float(raw)
    return raw


def _override(obj: Any, path: list[str], raw: str, key: str) -> Any:
    names = [f.name for f in dataclasses.fields(obj)]
    if path[0] not in names:
        raise ValueError(f"unknown setting {key!r}; {did_you_mean(path[0], names)}"
                         f"valid at this level: {', '.join(names)}")
    cur = getattr(obj, path[0])
    if len(path) == 1:
        if dataclasses.is_dataclass(cur):
            raise ValueError(f"{key!r} is a group; set one of its fields, e.g. {key}.{dataclasses.fields(cur)[0].name}")
        return dataclasses.replace(obj, **{path[0]: _parse(raw, cur, key)})
    if not dataclasses.is_dataclass(cur):
        raise ValueError(f"{key!r}: {path[0]} has no sub-settings")
    return dataclasses.replace(obj, **{path[0]: _override(cur, path[1:], raw, key)})
