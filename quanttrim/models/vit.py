"""A small DINOv2-style ViT: patch embedding, class token, learned positions, pre-norm blocks with
LayerScale. Attention is written out (no fused SDPA) so it exports to plain opset-17 ops, and Q/K/V,
the attention output and the projection carry QPoint markers (Table 8: scores stay FP)."""
from __future__ import annotations

import math

import torch
from torch import nn

from quanttrim.models.common import Add, Normalize, QPoint


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.hd = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.qq, self.qk, self.qv = QPoint(), QPoint(), QPoint()
        self.qo = QPoint()
        self.proj = nn.Linear(dim, dim)
        self.qproj = QPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, self.hd).transpose(1, 2)

        q, k, v = split(self.qq(self.q(x))), split(self.qk(self.k(x))), split(self.qv(self.v(x)))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))  # kept FP
        out = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(b, n, d)
        return self.qproj(self.proj(self.qo(out)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, init_values: float = 1e-1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ls1 = nn.Parameter(torch.full((dim,), init_values))  # LayerScale (DINOv2)
        self.add1 = Add()
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.qfc2 = QPoint()
        self.ls2 = nn.Parameter(torch.full((dim,), init_values))
        self.add2 = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.add1(x, self.attn(self.norm1(x)) * self.ls1)
        return self.add2(x, self.qfc2(self.fc2(self.act(self.fc1(self.norm2(x))))) * self.ls2)


class ViT(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, image_size: int, mean, std, dim: int, depth: int,
                 heads: int, patch: int) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        self.normalize = Normalize(mean, std)
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.qembed = QPoint()
        n = (image_size // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.qlogits = QPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.qembed(self.patch_embed(self.normalize(x))).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.qlogits(self.head(x[:, 0]))


def vit_small(num_classes: int, in_channels: int, image_size: int, mean, std, width: float = 1.0) -> ViT:
    """Small ViT: dim 192·width, depth 6, 3 heads; patch 4 (7 for 28-px inputs, 16 above 128 px)."""
    patch = 16 if image_size > 128 else (4 if image_size % 4 == 0 and image_size <= 64 else 7 if image_size % 7 == 0 else 4)
    if image_size % patch:
        patch = next(p for p in (4, 2, 1) if image_size % p == 0)
    heads = 3
    dim = max(heads * 8, int(round(192 * width / heads)) * heads)
    return ViT(num_classes, in_channels, image_size, mean, std, dim=dim, depth=6, heads=heads, patch=patch)
