"""A ViT-Tiny-shaped transformer (width 192, 3 heads, MLP 768, pre-LayerNorm, GELU, class token,
learned positions) with 6 blocks, trained here on scikit-learn's digits upscaled to 32x32
(patch 8 -> 16 tokens + class token).

ViT-Tiny has 12 blocks; 6 keep training within a few CPU minutes while the per-block shapes
(and so the quantization problems: LayerNorm, Softmax, GELU, attention MatMuls) are ViT-Tiny's.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import ZooModel
from .training import digits, trained_classifier

EPOCHS = 6
SIZE = 32
PATCH = 8


class Block(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, T, D)."""
        n, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        x = x + self.proj((att.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class VitTiny(nn.Module):
    """Patch embedding (conv 8x8/8), class token, learned positions, blocks, final LN, Linear head."""

    def __init__(self, num_classes: int = 10, image: int = SIZE, patch: int = PATCH, channels: int = 1,
                 dim: int = 192, depth: int = 6, heads: int = 3, mlp: int = 768) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 32, 32) in [0, 1] -> (N, num_classes) logits from the class token."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def build() -> ZooModel:
    """Train the ViT on 32x32 digits and package it with labelled held-out scans."""
    torch.manual_seed(0)
    split = digits(SIZE)
    model = VitTiny()
    return trained_classifier(
        "vit_tiny_digits", model, split, epochs=EPOCHS, lr=2e-3, shift_augment=True, trained_on="1,347 sklearn digits",
        what="ViT-Tiny-shaped encoder (dim 192, 3 heads, MLP 768, 6 pre-LN blocks, 17 tokens; 2.7 M params), 1x32x32",
        output_kind="logits (10 digits)",
        model_class="benchmarks.zoo.vit_tiny_digits:VitTiny",
        notes="real labels; pixels in [0, 1]",
    )
