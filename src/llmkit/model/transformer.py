"""A LLaMA-family decoder-only transformer, readable top to bottom.

RMSNorm -> grouped-query attention with RoPE -> RMSNorm -> SwiGLU MLP, pre-norm residual blocks,
optional tied input/output embeddings. Module and parameter names mirror Hugging Face's
``LlamaForCausalLM`` (``model.layers.0.self_attn.q_proj.weight`` ...), so ``state_dict()`` saved to
safetensors next to ``ModelConfig.to_hf_dict()`` *is* a Hugging Face checkpoint. The options of the
other families it reads are config fields: q/k/v biases (Qwen2), RMSNorm on each head's queries and
keys (Qwen3), sliding-window attention (Mistral, Qwen2/3), a head width of its own (Qwen3).

Shapes: B batch, T new tokens, S attended tokens (cache + new), H query heads, K key/value heads,
D head_dim, C hidden size, V vocabulary.
"""

from __future__ import annotations

import math
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmkit.config import ModelConfig
from llmkit.model.inference import current
from llmkit.model.rope import RotaryEmbedding, apply_rope


class KVCacheLike(Protocol):
    """What attention needs from a KV cache (the inference engine provides one)."""

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys/values (B, K, T, D) and return all of them so far (B, K, S, D)."""
        ...


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, as in Llama (and bit-compatible with HF's)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # the same operations in one call (fewer dispatches; bitwise equal to the lines below)
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    FUSED: ClassVar[dict[str, tuple[str, ...]]] = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",)}
    """Projections that read the same input: one matmul each at inference (model/inference.py)."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.num_attention_heads
        self.n_kv_head = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.window = config.window(layer_idx)  # attend to the last `window` tokens only (0: all)
        C = config.hidden_size
        bias = config.attention_bias
        self.q_proj = nn.Linear(C, self.n_head * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(C, self.n_kv_head * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(C, self.n_kv_head * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, C, bias=False)
        if config.qk_norm:  # Qwen3: one RMSNorm gain per head_dim, shared by all heads
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.fast = None  # {"qkv", "o"}: FastLinears set by model.inference.prepare_for_inference

    def forward(self, x, cos, sin, attn_mask=None, kv_cache: KVCacheLike | None = None, position_ids=None):
        B, T, _ = x.shape
        H, K, D = self.n_head, self.n_kv_head, self.head_dim
        fast = current(self.fast)
        if fast:  # inference: one matmul for q, k, v
            qkv = fast["qkv"](x)  # (B, T, (H + 2K) * D)
            q = qkv[..., : H * D].view(B, T, H, D)
            k = qkv[..., H * D : (H + K) * D].view(B, T, K, D)
            v = qkv[..., (H + K) * D :].view(B, T, K, D)
        else:
            q = self.q_proj(x).view(B, T, H, D)  # (B, T, H, D)
            k = self.k_proj(x).view(B, T, K, D)  # (B, T, K, D)
            v = self.v_proj(x).view(B, T, K, D)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if fast and not hasattr(self, "q_norm"):  # RoPE on q and k together: one call on adjacent views
            qk = apply_rope(qkv[..., : (H + K) * D].view(B, T, H + K, D), cos, sin)  # (B, T, H + K, D)
            q, k = qk[:, :, :H], qk[:, :, H:]
        else:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|K, T, D)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, K, S, D) in the cache's dtype
            q = q.to(k.dtype)  # the engine keeps an fp32 cache for bf16 weights on CPU (faster attention)
        if self.window and k.size(2) > self.window:
            attn_mask = sliding_window_mask(attn_mask, position_ids, T, k.size(2), self.window)
        gqa = K != H  # SDPA shares each K/V head across H/K query heads
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=gqa)  # (B, H, T, D)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=gqa)  # mask (B, 1, T, S)
        y = y.transpose(1, 2).reshape(B, T, H * D).to(x.dtype)  # (B, T, C)
        return fast["o"](y) if fast else self.o_proj(y)


def sliding_window_mask(attn_mask, position_ids, T: int, S: int, window: int) -> torch.Tensor:
    """``attn_mask`` (B, 1, T, S) or None (causal), narrowed to the latest ``window`` keys of each
    query: key slot s is position s (the KV cache's layout); queries are at ``position_ids`` (B, T),
    else the last T of the S positions. (B or 1, 1, T, S) bool, True where attention is allowed."""
    keys = torch.arange(S, device=position_ids.device if position_ids is not None else None)  # (S,)
    queries = position_ids if position_ids is not None else torch.arange(S - T, S, device=keys.device)[None]
    distance = queries[:, None, :, None] - keys  # (B, 1, T, S)
    allowed = (distance >= 0) & (distance < window)
    return allowed if attn_mask is None else allowed & attn_mask


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    FUSED: ClassVar[dict[str, tuple[str, ...]]] = {"gate_up": ("gate_proj", "up_proj"), "down": ("down_proj",)}

    def __init__(self, config: ModelConfig):
        super().__init__()
        C, inner = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(C, inner, bias=False)
        self.up_proj = nn.Linear(C, inner, bias=False)
        self.down_proj = nn.Linear(inner, C, bias=False)
        self.fast = None  # {"gate_up", "down"}: FastLinears set by model.inference.prepare_for_inference

    def forward(self, x):
        fast = current(self.fast)
        if fast:
            gate, up = fast["gate_up"](x).chunk(2, dim=-1)  # (B, T, I) views of one matmul's output
            return fast["down"](F.silu(gate, inplace=True) * up)  # in place: 4x faster on a strided view
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, I) -> (B, T, C)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, attn_mask=None, kv_cache=None, position_ids=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attn_mask, kv_cache, position_ids)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """Embeddings, the stack of blocks and the final norm (HF's ``LlamaModel``, named ``model``)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        # a skeleton on the meta device (a checkpoint being loaded) skips nn.Embedding's own init:
        # normal_ on meta imports torch._dynamo, a second of every CLI start
        skeleton = torch.empty(0).is_meta
        self.embed_tokens = nn.Embedding(
            config.vocab_size,
            config.hidden_size,
            _weight=torch.empty(config.vocab_size, config.hidden_size) if skeleton else None,
        )
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)
        # activation checkpointing (train.activation_checkpointing): while training, keep only each
        # block's input and recompute the block in backward: one extra forward for far less memory
        self.checkpoint_blocks = False

    def forward(self, input_ids, position_ids=None, attn_mask=None, kv_cache=None):
        """Final normalised hidden states (B, T, C) of ``input_ids`` (B, T)."""
        x = self.embed_tokens(input_ids)  # (B, T, C)
        cos, sin = self.rotary_emb(x, position_ids)  # (B or 1, T, 1, D) each; positions 0.. if None
        recompute = self.checkpoint_blocks and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                x = checkpoint(layer, x, cos, sin, attn_mask, kv_cache, position_ids, use_reentrant=False)
            else:
                x = layer(x, cos, sin, attn_mask, kv_cache, position_ids)
        return self.norm(x)


class Transformer(nn.Module):
    """Decoder-only LM: ``model(input_ids) -> logits (B, T, V)``."""

    FUSED: ClassVar[dict[str, tuple[str, ...]]] = {"head": ("lm_head",)}

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = LlamaBody(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.fast = None  # {"head"}: a FastLinear set by model.inference.prepare_for_inference
        if not self.lm_head.weight.is_meta:  # a meta skeleton is about to receive a checkpoint's weights
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, initializer_range) everywhere; residual output projections scaled by
        1/sqrt(2 * layers) (GPT-2) so the residual stream's variance does not grow with depth."""
        std = self.config.initializer_range
        out_std = std / math.sqrt(2 * self.config.num_hidden_layers)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:
                nn.init.ones_(p)  # RMSNorm gains
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)

    def hidden_states(self, input_ids, position_ids=None, attn_mask=None, kv_cache=None):
        """Final normalised hidden states (B, T, C); reward/value heads read these."""
        return self.model(input_ids, position_ids, attn_mask, kv_cache)

    def forward(self, input_ids, position_ids=None, attn_mask=None, kv_cache=None, last_only: bool = False):
        """Logits (B, T, V), or (B, 1, V) for the last position only when ``last_only``.

        ``attn_mask`` (B, 1, T, S) bool, True where attention is allowed, replaces the causal mask
        (needed with a KV cache or padded rows). ``kv_cache`` follows :class:`KVCacheLike`.
        """
        h = self.hidden_states(input_ids, position_ids, attn_mask, kv_cache)
        if last_only:
            h = h[:, -1:]  # (B, 1, C)
        return self.head(h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., C) -> logits (..., V), through the fast kernel when inferring."""
        fast = current(self.fast)
        return fast["head"](h) if fast else self.lm_head(h)

    def num_params(self, include_embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            n -= self.model.embed_tokens.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward): 6N plus attention, as in PaLM's appendix."""
        c = self.config
        n = self.num_params(include_embeddings=False)
        if c.tie_word_embeddings:
            n += self.lm_head.weight.numel()  # the tied head still does a matmul per token
        return 6 * n + 12 * c.num_hidden_layers * c.hidden_size * seq_len
