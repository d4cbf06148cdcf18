"""Rotary position embeddings, in the "rotate half" layout that Hugging Face Llama uses.

The pair (x[i], x[i + d/2]) of each head is rotated by angle ``position * inv_freq[i]``. Keeping
HF's layout (rather than interleaved pairs) is what lets our checkpoints load in ``transformers``
without permuting q/k weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmkit.config import ModelConfig
from llmkit.errors import ConfigError


def rope_inv_freq(config: ModelConfig, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (head_dim/2,) and the attention scaling factor for ``config``.

    ``config.rope_scaling`` is read the way transformers reads Llama's ``rope_scaling`` /
    ``rope_parameters`` (same keys, same defaults, same formulas), so a checkpoint with scaling
    gives the same logits in both:

    * ``linear`` (position interpolation): every frequency divided by ``factor``.
    * ``dynamic`` (NTK-aware): the base grows with the current length ``seq_len`` once it passes
      ``max_position_embeddings``: ``base * (factor * L / max_pos - (factor - 1)) ** (d / (d - 2))``.
    * ``yarn``: low frequencies interpolated, high ones kept, a linear ramp between (``beta_fast``,
      ``beta_slow``), and cos/sin scaled by ``0.1 * ln(factor) + 1`` (or ``attention_factor``).
    * ``llama3``: Llama 3.1's wavelength-banded interpolation.

    The plain case is ``1 / base^(2i/d)`` with scaling 1.0.
    """
    d = config.head_dim
    base = config.rope_theta
    exponents = torch.arange(0, d, 2, dtype=torch.int64).float() / d  # (d/2,)
    rs = config.rope_scaling or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "default":
        return 1.0 / (base ** exponents), 1.0
    if kind not in ("linear", "dynamic", "yarn", "llama3"):
        raise ConfigError(f"model.rope_scaling rope_type={kind!r} is not supported; "
                          "use linear, dynamic, yarn or llama3")
    factor = rs.get("factor")
    if factor is None and kind == "yarn" and "original_max_position_embeddings" in rs:
        factor = config.max_position_embeddings / rs["original_max_position_embeddings"]
    if not isinstance(factor, (int, float)) or factor < 1:
        raise ConfigError(f"model.rope_scaling factor={factor!r} must be a number >= 1")
    if kind == "linear":
        return 1.0 / (base ** exponents) / factor, 1.0
    if kind == "dynamic":
        max_pos = config.max_position_embeddings
        L = max(seq_len or max_pos, max_pos)
        base = base * ((factor * L / max_pos) - (factor - 1)) ** (d / (d - 2))
        return 1.0 / (base ** exponents), 1.0
    original = rs.get("original_max_position_embeddings", config.max_position_embeddings)
    if kind == "llama3":
        inv_freq = 1.0 / (base ** exponents)
        low, high = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
        low_wavelen, high_wavelen = original / low, original / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (original / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled), 1.0
    # yarn
    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = rs.get("attention_factor")
    if attention is None:
        if rs.get("mscale") and rs.get("mscale_all_dim"):
            attention = float(mscale(factor, rs["mscale"]) / mscale(factor, rs["mscale_all_dim"]))
        else:
            attention = mscale(factor)
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def correction_dim(rotations):
        return (d * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    lo, hi = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, d - 1)
    if lo == hi:
        hi += 0.001
    ramp = ((torch.arange(d // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0, 1)  # (d/2,)
    pos_freqs = base ** (torch.arange(0, d, 2).float() / d)
    extrapolate = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolate) + (1.0 / pos_freqs) * extrapolate
    return inv_freq, attention


class RotaryEmbedding(nn.Module):
    """Computes cos/sin tables for arbitrary (per-row) positions.

    With ``dynamic`` scaling the frequencies depend on the longest position in the current forward
    (as in transformers), so they are recomputed when that passes the trained length.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        inv_freq, self.attention_scaling = rope_inv_freq(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        rs = config.rope_scaling or {}
        self.dynamic = rs.get("rope_type", rs.get("type")) == "dynamic"

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: (B, T) -> cos, sin: (B, T, head_dim), computed in fp32 then cast
        inv_freq = self.inv_freq
        if self.dynamic:
            seq_len = int(position_ids.max()) + 1
            if seq_len > self.config.max_position_embeddings:
                inv_freq = rope_inv_freq(self.config, seq_len)[0].to(inv_freq.device)
        freqs = position_ids[..., None].float() * inv_freq.float()  # (B, T, d/2)
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


def set_rope_scaling(model: nn.Module, scaling: dict | None) -> None:
    """Change a loaded model's RoPE scaling at inference (e.g. ``{"rope_type": "yarn", "factor": 4}``
    to read 4x past the trained context); ``None`` restores plain RoPE. The config is updated, so a
    checkpoint saved afterwards records it in config.json as transformers expects."""
    config = model.config
    old = config.rope_scaling
    config.rope_scaling = dict(scaling) if scaling else None
    try:
        rope_inv_freq(config)  # validate before touching the module
    except ConfigError:
        config.rope_scaling = old
        raise
    rotary = model.model.rotary_emb
    device = rotary.inv_freq.device
    rotary.__init__(config)
    rotary.to(device)


def parse_rope_scaling(text: str) -> dict | None:
    """``"yarn:4"`` / ``"linear:2"`` / ``"dynamic:2"`` / ``"none"`` -> a ``rope_scaling`` dict."""
    if text in ("", "none", "default"):
        return None
    kind, _, factor = text.partition(":")
    try:
        return {"rope_type": kind, "factor": float(factor)}
    except ValueError:
        raise ConfigError(f"--rope-scaling {text!r}: write TYPE:FACTOR, e.g. yarn:4 or linear:2") from None
