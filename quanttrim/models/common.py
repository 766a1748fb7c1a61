"""Building blocks shared by the zoo. Quantization points are explicit modules so the wrapper can find
them by type: activations (nn.ReLU, ...), residual ``Add`` and ``QPoint`` markers placed where a
deployment toolchain quantizes a tensor that no activation follows (branch ends before an add, pooled
features, attention Q/K/V and outputs, logits)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """(x − mean)/std inside the model, so every exported graph takes raw [0, 1] images."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


class Add(nn.Module):
    """Residual addition as a module, so the wrapper can fake-quantize its output."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class QPoint(nn.Identity):
    """Marks a tensor a deployed graph quantizes although no nonlinearity follows it (identity in FP32)."""


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    layers.append(act() if act is not None else QPoint())
    return nn.Sequential(*layers)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` (MobileNet convention), never below 90% of v."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v
