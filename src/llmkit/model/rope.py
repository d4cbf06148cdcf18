"""Rotary position embeddings, in the "rotate half" layout that Hugging Face Llama uses.

The pair (x[i], x[i + d/2]) of each head is rotated by angle ``position * inv_freq[i]``. Keeping
HF's layout (rather than interleaved pairs) is what lets our checkpoints load in ``transformers``
without permuting q/k weights.
"""

from __future__ import annotations

import torch
from torch import nn

from llmkit.config import ModelConfig


def rope_inv_freq(config: ModelConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (head_dim/2,) and the attention scaling factor for ``config``.

    Scaling variants (linear, dynamic NTK, YaRN) adjust these; the plain case is
    ``1 / base^(2i/d)`` with scaling 1.0.
    """
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))  # (d/2,)
    return inv_freq, 1.0


class RotaryEmbedding(nn.Module):
    """Computes cos/sin tables for arbitrary (per-row) positions."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        inv_freq, self.attention_scaling = rope_inv_freq(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: (B, T) -> cos, sin: (B, T, head_dim), computed in fp32 then cast
        freqs = position_ids[..., None].float() * self.inv_freq.float()  # (B, T, d/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, d)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype), sin.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate queries and keys. q: (B, Hq, T, d), k: (B, Hkv, T, d), cos/sin: (B, T, d)."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, d) broadcast over heads
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
