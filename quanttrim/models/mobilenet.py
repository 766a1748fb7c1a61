"""MobileNetV2 (width multiplier) and MobileNetV3-Small, CIFAR-friendly strides for small inputs."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from quanttrim.models.common import Add, Normalize, QPoint, conv_bn, make_divisible


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: float, act: type[nn.Module] = nn.ReLU6,
                 k: int = 3, se: bool = False) -> None:
        super().__init__()
        hidden = make_divisible(cin * expand)
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(conv_bn(cin, hidden, 1, act=act))
        layers.append(conv_bn(hidden, hidden, k, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(conv_bn(hidden, cout, 1, act=None))  # linear bottleneck: ends in a QPoint
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout
        self.add = Add() if self.use_res else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return self.add(y, x) if self.add is not None else y


class SqueezeExcite(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        mid = make_divisible(ch / 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(ch, mid, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(mid, ch, 1)
        self.gate = nn.Hardsigmoid()
        self.q = QPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))
        return self.q(x * s)


class MobileNet(nn.Module):
    def __init__(self, stem: nn.Module, blocks: nn.Module, head: nn.Module, feat: int, num_classes: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stem, self.blocks, self.head = stem, blocks, head
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.qpool = QPoint()
        self.fc = nn.Linear(feat, num_classes)
        self.qlogits = QPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(self.normalize(x))))
        return self.qlogits(self.fc(torch.flatten(self.qpool(self.pool(x)), 1)))


def _small(image_size: int) -> bool:
    return image_size < 96  # CIFAR/MNIST-sized: keep more resolution (stride-1 stem, fewer downsamplings)


def mobilenetv2(num_classes: int, in_channels: int, image_size: int, mean, std, width: float = 1.0) -> MobileNet:
    # (expansion t, channels c, repeats n, stride s) from Sandler et al. 2018
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    small = _small(image_size)
    if small:
        cfg[1] = (6, 24, 2, 1)
    cin = make_divisible(32 * width)
    stem = conv_bn(in_channels, cin, 3, 1 if small else 2, act=nn.ReLU6)
    blocks = []
    for t, c, n, s in cfg:
        cout = make_divisible(c * width)
        for i in range(n):
            blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
            cin = cout
    feat = make_divisible(1280 * max(1.0, width))
    head = conv_bn(cin, feat, 1, act=nn.ReLU6)
    return MobileNet(stem, nn.Sequential(*blocks), head, feat, num_classes, mean, std)


def mobilenetv3_small(num_classes: int, in_channels: int, image_size: int, mean, std, width: float = 1.0) -> MobileNet:
    # (kernel, expansion size, out, SE, activation, stride) from Howard et al. 2019, Table 2
    hs, re = nn.Hardswish, nn.ReLU
    cfg = [(3, 16, 16, True, re, 2), (3, 72, 24, False, re, 2), (3, 88, 24, False, re, 1),
           (5, 96, 40, True, hs, 2), (5, 240, 40, True, hs, 1), (5, 240, 40, True, hs, 1),
           (5, 120, 48, True, hs, 1), (5, 144, 48, True, hs, 1), (5, 288, 96, True, hs, 2),
           (5, 576, 96, True, hs, 1), (5, 576, 96, True, hs, 1)]
    small = _small(image_size)
    cin = make_divisible(16 * width)
    stem = conv_bn(in_channels, cin, 3, 1 if small else 2, act=hs)
    blocks = []
    for i, (k, exp, c, se, act, s) in enumerate(cfg):
        if small and i == 0:
            s = 1
        cout = make_divisible(c * width)
        hidden = make_divisible(exp * width)
        blocks.append(InvertedResidual(cin, cout, s, hidden / cin, act=act, k=k, se=se))
        cin = cout
    feat = make_divisible(576 * width)
    head = conv_bn(cin, feat, 1, act=hs)
    return MobileNet(stem, nn.Sequential(*blocks), head, feat, num_classes, mean, std)
