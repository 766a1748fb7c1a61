"""A small U-Net for segmentation (per-pixel logits [N, classes, H, W]); any input size divisible by 4."""
from __future__ import annotations

import torch
from torch import nn

from quanttrim.models.common import Normalize, QPoint, conv_bn


class UNetSmall(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, mean, std, base: int) -> None:
        super().__init__()
        b = base
        self.normalize = Normalize(mean, std)
        self.enc1 = nn.Sequential(conv_bn(in_channels, b, 3), conv_bn(b, b, 3))
        self.down1 = nn.MaxPool2d(2)
        self.enc2 = nn.Sequential(conv_bn(b, 2 * b, 3), conv_bn(2 * b, 2 * b, 3))
        self.down2 = nn.MaxPool2d(2)
        self.mid = nn.Sequential(conv_bn(2 * b, 4 * b, 3), conv_bn(4 * b, 4 * b, 3))
        self.up2 = nn.ConvTranspose2d(4 * b, 2 * b, 2, 2)
        self.qup2 = QPoint()
        self.dec2 = nn.Sequential(conv_bn(4 * b, 2 * b, 3), conv_bn(2 * b, 2 * b, 3))
        self.up1 = nn.ConvTranspose2d(2 * b, b, 2, 2)
        self.qup1 = QPoint()
        self.dec1 = nn.Sequential(conv_bn(2 * b, b, 3), conv_bn(b, b, 3))
        self.out = nn.Conv2d(b, num_classes, 1)
        self.qlogits = QPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(self.normalize(x))
        e2 = self.enc2(self.down1(e1))
        m = self.mid(self.down2(e2))
        d2 = self.dec2(torch.cat([self.qup2(self.up2(m)), e2], 1))
        d1 = self.dec1(torch.cat([self.qup1(self.up1(d2)), e1], 1))
        return self.qlogits(self.out(d1))


def unet_small(num_classes: int, in_channels: int, image_size: int, mean, std, width: float = 1.0) -> UNetSmall:
    """Small U-Net (2 levels, 16·width base channels)."""
    if image_size % 4:
        raise ValueError(f"unet_small needs an image size divisible by 4, got {image_size}")
    return UNetSmall(num_classes, in_channels, mean, std, base=max(4, int(round(16 * width))))
