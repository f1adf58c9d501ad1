"""A small BERT-style sentence encoder for the transformer PTQ tests, with the outliers real encoders have.

`TinyEncoder` takes `input_ids` and `attention_mask` (int64, like a tokenizer's output) and returns
the L2-normalised mean-pooled embedding, as sentence-transformers models do. Trained encoders have a
few LayerNorm output channels 10-30x larger than the rest and a few FFN channels whose GELU output
is far above the others (Dettmers et al., 2022; Xiao et al., 2023); `inject_outliers` gives the
seeded random weights the same pattern, so per-tensor int8 of those activations loses the small
channels as it does on MiniLM.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

VOCAB, SEQ = 200, 16


class Block(nn.Module):
    """Post-LN encoder block: self-attention with a padding mask, then GELU FFN."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.inter, self.out = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, l, d = x.shape
        split = lambda t: t.view(b, l, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5 + bias
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, l, d)
        x = self.norm1(x + self.proj(context))
        return self.norm2(x + self.out(nn.functional.gelu(self.inter(x))))


class TinyEncoder(nn.Module):
    """Token + position embeddings, LayerNorm, `layers` blocks, masked mean pooling, L2 normalisation."""

    def __init__(self, dim: int = 64, heads: int = 4, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(VOCAB, dim), nn.Embedding(SEQ, dim)
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden) for _ in range(layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        x = self.norm(self.tokens(input_ids) + self.positions(positions))
        mask = attention_mask.to(x.dtype)
        bias = (1.0 - mask)[:, None, None, :] * -10000.0
        for block in self.blocks:
            x = block(x, bias)
        pooled = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)


def inject_outliers(model: TinyEncoder, seed: int = 0) -> TinyEncoder:
    """Give 3 LayerNorm channels per norm a 12-25x gain and 4 FFN channels per block a 6-10x larger GELU input."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for norm in [model.norm] + [n for blk in model.blocks for n in (blk.norm1, blk.norm2)]:
            channels = rng.choice(norm.weight.numel(), 3, replace=False)
            norm.weight[channels] *= torch.from_numpy(rng.uniform(12, 25, 3).astype(np.float32))
        for blk in model.blocks:
            channels = rng.choice(blk.inter.out_features, 4, replace=False)
            blk.inter.weight[channels] *= torch.from_numpy(rng.uniform(6, 10, (4, 1)).astype(np.float32))
            blk.inter.bias[channels] += 1.0
    return model


def encoder(seed: int = 0) -> TinyEncoder:
    """The seeded test encoder, outliers injected, in eval mode."""
    torch.manual_seed(seed)
    return inject_outliers(TinyEncoder(), seed).eval()


def token_batches(count: int, seed: int) -> dict[str, np.ndarray]:
    """`count` padded token sequences of 4..SEQ tokens (ids 1..VOCAB-1, 0 = padding) and their masks."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, SEQ + 1, count)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, VOCAB, (count, SEQ)).astype(np.int64) * mask
    return {"input_ids": ids, "attention_mask": mask}


def export_program(model: TinyEncoder, path) -> None:
    """Save `model` as a torch.export program with a dynamic batch axis."""
    example = token_batches(2, seed=99)
    args = (torch.from_numpy(example["input_ids"]), torch.from_numpy(example["attention_mask"]))
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, args, dynamic_shapes={"input_ids": {0: batch}, "attention_mask": {0: batch}})
    torch.export.save(program, str(path))


def export_onnx(model: TinyEncoder, path) -> None:
    """Float ONNX of `model` through the exporter's own tracing (inputs `input_ids`, `attention_mask`)."""
    from exporter.inputs import InputSpec
    from exporter.onnx_export import export_onnx as trace

    specs = [InputSpec("input_ids", (2, SEQ), "int64"), InputSpec("attention_mask", (2, SEQ), "int64")]
    trace(model, specs, path, 18, dynamic_batch=True)
