"""Scalar heads on the decoder: reward models and PPO's value head.

:class:`RewardModel` is the decoder body with a linear ``score`` head read at each sequence's last
token, laid out exactly like Hugging Face's ``LlamaForSequenceClassification`` (``num_labels=1``)
or its Qwen2 twin, so a saved reward model loads in ``transformers`` with the same scores.
:class:`PolicyWithValue` is the causal LM with a ``value_head`` beside ``lm_head`` on the same
trunk (one forward gives next-token logits and per-position values), as InstructGPT-style PPO on a
small budget does; :meth:`PolicyWithValue.policy` gives the plain LM to publish.

Shapes: B batch, T tokens, C hidden size.
"""

from __future__ import annotations

import torch
from torch import nn

from llmkit.config import ModelConfig
from llmkit.model.transformer import LlamaBody, Transformer


def sequence_classifier_config(config: ModelConfig) -> dict:
    """The ``config.json`` entries that make a checkpoint a one-label sequence classifier."""
    arch = "Qwen2ForSequenceClassification" if config.attention_bias else "LlamaForSequenceClassification"
    return {
        "architectures": [arch],
        "num_labels": 1,
        "id2label": {"0": "LABEL_0"},
        "label2id": {"LABEL_0": 0},
    }


def last_positions(lengths: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (B,) from its length (B,)."""
    return (lengths - 1).clamp(min=0)


class RewardModel(nn.Module):
    """``model(input_ids, lengths) -> rewards (B,)``: the score of each right-padded row at its last
    real token (transformers takes the rightmost non-pad token: the same one, since text never
    contains the pad token)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = LlamaBody(config)
        self.score = nn.Linear(config.hidden_size, 1, bias=False)
        if not self.score.weight.is_meta:
            nn.init.normal_(self.score.weight, 0.0, 1.0 / (config.hidden_size + 1) ** 0.5)

    @classmethod
    def from_causal_lm(cls, lm: Transformer) -> RewardModel:
        """A reward model whose body is ``lm``'s (shared tensors, no copy) and a fresh score head."""
        with torch.device("meta"):
            rm = cls(lm.config)
        rm.model = lm.model
        rm.score = nn.Linear(lm.config.hidden_size, 1, bias=False, device=lm.lm_head.weight.device)
        nn.init.normal_(rm.score.weight, 0.0, 1.0 / (lm.config.hidden_size + 1) ** 0.5)
        return rm

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.model(input_ids)  # (B, T, C)
        last = h[torch.arange(h.shape[0], device=h.device), last_positions(lengths)]  # (B, C)
        return self.score(last).squeeze(-1).float()  # (B,)

    def num_params(self, include_embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - (0 if include_embeddings else self.model.embed_tokens.weight.numel())


class PolicyWithValue(Transformer):
    """The causal LM plus ``value_head`` (C -> 1) on the same final hidden states.

    ``model(input_ids)`` still gives logits (so the engine samples from it unchanged);
    ``model(input_ids, values=True)`` gives logits and values from one forward pass for PPO's
    losses (through ``forward``, so a DDP wrapper syncs both heads' gradients).
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.value_head = nn.Linear(config.hidden_size, 1, bias=False)
        if not self.value_head.weight.is_meta:
            nn.init.zeros_(self.value_head.weight)  # values start at 0: early advantages are the returns

    @classmethod
    def from_causal_lm(cls, lm: Transformer) -> PolicyWithValue:
        """``lm``'s modules (shared, not copied) with a zero value head."""
        with torch.device("meta"):
            out = cls(lm.config)
        out.model, out.lm_head = lm.model, lm.lm_head
        out.value_head = nn.Linear(lm.config.hidden_size, 1, bias=False, device=lm.lm_head.weight.device)
        nn.init.zeros_(out.value_head.weight)
        return out

    def forward(self, input_ids, position_ids=None, attn_mask=None, kv_cache=None, last_only=False, values=False):
        """Logits (B, T, V) as :class:`Transformer` gives them; with ``values``, also the value of
        the state after each token (B, T)."""
        if not values:
            return super().forward(input_ids, position_ids, attn_mask, kv_cache, last_only)
        h = self.hidden_states(input_ids, position_ids, attn_mask, kv_cache)  # (B, T, C)
        return self.head(h), self.value_head(h).squeeze(-1).float()

    def policy(self) -> Transformer:
        """The plain causal LM (same tensors), for publishing the trained policy."""
        with torch.device("meta"):
            lm = Transformer(self.config)
        lm.model, lm.lm_head = self.model, self.lm_head
        return lm
