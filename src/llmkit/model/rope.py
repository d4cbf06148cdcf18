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
    # on the CPU whatever the default device: a model skeleton built on meta needs real frequencies
    exponents = torch.arange(0, d, 2, dtype=torch.int64, device="cpu").float() / d  # (d/2,)
    rs = config.rope_scaling or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "default":
        return 1.0 / (base**exponents), 1.0
    if kind not in ("linear", "dynamic", "yarn", "llama3"):
        raise ConfigError(
            f"model.rope_scaling rope_type={kind!r} is not supported; use linear, dynamic, yarn or llama3"
        )
    factor = rs.get("factor")
    if factor is None and kind == "yarn" and "original_max_position_embeddings" in rs:
        factor = config.max_position_embeddings / rs["original_max_position_embeddings"]
    if not isinstance(factor, (int, float)) or factor < 1:
        raise ConfigError(f"model.rope_scaling factor={factor!r} must be a number >= 1")
    if kind == "linear":
        return 1.0 / (base**exponents) / factor, 1.0
    if kind == "dynamic":
        max_pos = config.max_position_embeddings
        L = max(seq_len or max_pos, max_pos)
        base = base * ((factor * L / max_pos) - (factor - 1)) ** (d / (d - 2))
        return 1.0 / (base**exponents), 1.0
    original = rs.get("original_max_position_embeddings", config.max_position_embeddings)
    if kind == "llama3":
        inv_freq = 1.0 / (base**exponents)
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
    ramp = ((torch.arange(d // 2, dtype=torch.float32, device="cpu") - lo) / (hi - lo)).clamp(0, 1)  # (d/2,)
    pos_freqs = base**exponents
    extrapolate = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolate) + (1.0 / pos_freqs) * extrapolate
    return inv_freq, attention


class RotaryEmbedding(nn.Module):
    """cos/sin tables for arbitrary (per-row) positions.

    ``forward`` returns ``cos`` and a *signed* ``sin`` (first half negated) so that rotating is
    ``x * cos + x.roll(d/2) * sin``: the same products as HF's ``rotate_half`` form, in fewer
    operations. Rows for positions ``0 .. L-1`` are computed once (in fp32, exactly as a per-call
    computation would) and looked up; the table doubles when a longer position arrives. With
    ``dynamic`` scaling the frequencies depend on the longest position in the current forward (as
    in transformers), so past the trained length they are computed per call instead.

    ``inv_freq`` is deliberately not a buffer: ``model.to(torch.bfloat16)`` must not round the
    frequencies (at position 500 that would move angles by up to a radian).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.inv_freq, self.attention_scaling = rope_inv_freq(config)  # (d/2,) fp32
        rs = config.rope_scaling or {}
        self.dynamic = rs.get("rope_type", rs.get("type")) == "dynamic"
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, signed sin: (L, d) fp32

    def _cos_sin(self, positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[..., None].float() * inv_freq.to(positions.device)  # (..., d/2)
        half = freqs.size(-1)
        emb = torch.cat((freqs, freqs), dim=-1)  # (..., d)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        sin[..., :half] = -sin[..., :half]  # rotate_half's sign, folded into the table
        return cos, sin

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin (B, T, 1, d) in x's dtype and device for x (B, T, ...) at
        ``position_ids`` (B, T); (1, T, 1, d) for positions ``0 .. T-1`` when ``position_ids`` is
        None (a slice of the table: no lookup, no device sync)."""
        T, device = x.size(1), x.device
        last = T - 1 if position_ids is None else int(position_ids.max())
        if self.dynamic and last >= self.config.max_position_embeddings:
            if position_ids is None:
                position_ids = torch.arange(T, device=device)[None]
            cos, sin = self._cos_sin(position_ids, rope_inv_freq(self.config, last + 1)[0])  # (B, T, d)
            return cos[:, :, None].to(x.dtype), sin[:, :, None].to(x.dtype)
        table = self._table
        if table is None or table[0].size(0) <= last or table[0].device != device:
            size = max(last + 1, 2 * table[0].size(0) if table is not None else 256)
            with torch.inference_mode(False):
                table = self._cos_sin(torch.arange(size, device=device), self.inv_freq)
            self._table = table
        if position_ids is None:
            cos, sin = table[0][None, :T], table[1][None, :T]  # (1, T, d)
        else:
            cos, sin = table[0][position_ids], table[1][position_ids]  # (B, T, d)
        return cos[:, :, None].to(x.dtype), sin[:, :, None].to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys x (B, T, heads, d) by cos / signed sin (B, T, 1, d) from
    :class:`RotaryEmbedding`: HF's ``x * cos + rotate_half(x) * sin``, written as a roll."""
    return x * cos + x.roll(x.size(-1) // 2, -1) * sin


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
    model.model.rotary_emb.__init__(config)


def parse_rope_scaling(text: str) -> dict | None:
    """``"yarn:4"`` / ``"linear:2"`` / ``"dynamic:2"`` / ``"none"`` -> a ``rope_scaling`` dict."""
    if text in ("", "none", "default"):
        return None
    kind, _, factor = text.partition(":")
    try:
        return {"rope_type": kind, "factor": float(factor)}
    except ValueError:
        raise ConfigError(f"--rope-scaling {text!r}: write TYPE:FACTOR, e.g. yarn:4 or linear:2") from None
