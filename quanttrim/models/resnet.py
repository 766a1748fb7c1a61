"""ResNets: CIFAR-style ResNet-20 (3 stages, 16/32/64 channels) and ImageNet-style ResNet-18/50
(with a CIFAR stem for inputs smaller than 64 px). Written here so no torchvision is needed."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from quanttrim.models.common import Add, Normalize, QPoint


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.q2 = QPoint()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            # 1x1 projection ("option B"): a plain Conv+BN every exporter and compiler maps well.
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout), QPoint())
        self.add = Add()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.q2(self.bn2(self.conv2(y)))
        return self.relu2(self.add(y, self.shortcut(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.q3 = QPoint()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout), QPoint())
        self.add = Add()
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)))
        y = self.q3(self.bn3(self.conv3(y)))
        return self.relu3(self.add(y, self.shortcut(x)))


class ResNet(nn.Module):
    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        in_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        imagenet_stem: bool,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        w0 = widths[0]
        if imagenet_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, w0, 7, 2, 3, bias=False), nn.BatchNorm2d(w0), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU())
        cin = w0
        stages = []
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, w, stride))
                cin = w * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages[0], stages[1], stages[2]
        self.layer4 = stages[3] if len(stages) > 3 else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.qpool = QPoint()
        self.fc = nn.Linear(cin, num_classes)
        self.qlogits = QPoint()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.qpool(self.pool(x))
        return self.qlogits(self.fc(torch.flatten(x, 1)))


def resnet20(num_classes: int, in_channels: int, image_size: int, mean, std, width: float = 1.0) -> ResNet:
    widths = [max(4, int(round(c * width))) for c in (16, 32, 64)]
    return ResNet(BasicBlock, [3, 3, 3], widths, num_classes, in_channels, mean, std, imagenet_stem=False)


def resnet18(num_classes: int, in_channels: int, image_size: int, mean, std, width: float = 1.0) -> ResNet:
    widths = [max(4, int(round(c * width))) for c in (64, 128, 256, 512)]
    return ResNet(BasicBlock, [2, 2, 2, 2], widths, num_classes, in_channels, mean, std, imagenet_stem=image_size >= 64)


def resnet50(num_classes: int, in_channels: int, image_size: int, mean, std, width: float = 1.0) -> ResNet:
    widths = [max(4, int(round(c * width))) for c in (64, 128, 256, 512)]
    return ResNet(Bottleneck, [3, 4, 6, 3], widths, num_classes, in_channels, mean, std, imagenet_stem=image_size >= 64)
