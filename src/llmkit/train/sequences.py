"""Prompt + completion rows as tensors, their token log-probabilities, and the data order.

Every post-training stage trains on rows that are a prompt followed by a completion (an answer, a
chosen or rejected reply, a sampled rollout), right-padded into one (B, L) tensor. Only completion
tokens carry loss, so each batch has a ``loss_mask`` (B, L-1) aligned with the next-token targets
``input_ids[:, 1:]``. Right padding needs no attention mask: causal attention never looks right.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pack_completions(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int, device="cpu"
) -> dict[str, torch.Tensor]:
    """Rows ``prompt + completion``: ``input_ids`` (B, L) right-padded with ``pad_id``,
    ``loss_mask`` (B, L-1) float, 1 where the target is a completion token, and ``lengths`` (B,)."""
    rows = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), L - 1)
    for i, (p, r) in enumerate(zip(prompts, rows, strict=True)):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, len(p) - 1 : len(r) - 1] = 1.0  # targets r[len(p):] sit at positions len(p)-1 ..
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return {"input_ids": ids.to(device), "loss_mask": mask.to(device), "lengths": lengths.to(device)}


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(input_ids[:, t+1] | ..t) (B, L-1) from logits (B, L, V), in fp32, at ``temperature``."""
    logits = logits[:, :-1].float()  # (B, L-1, V)
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, 1:]  # (B, L-1)
    return -F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)


def model_logprobs(model, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The model's log-probability of each next token (B, L-1); the one place the policy's, the
    reference's and the old policy's token log-probs are computed, so they agree bit for bit."""
    return token_logprobs(model(input_ids), input_ids, temperature)


def select_rows(buffer: dict[str, torch.Tensor], rows: torch.Tensor | list[int]) -> dict[str, torch.Tensor]:
    """Rows ``rows`` of a packed buffer (``input_ids`` (N, L), per-target tensors (N, L-1), per-row
    tensors (N,)), cut to the longest selected row (no column of pure padding)."""
    L = buffer["input_ids"].shape[1]
    keep = int(buffer["lengths"][rows].max())
    out = {}
    for k, v in buffer.items():
        v = v[rows]
        if v.dim() >= 2 and v.shape[1] == L:
            v = v[:, :keep]
        elif v.dim() >= 2 and v.shape[1] == L - 1:
            v = v[:, : keep - 1]
        out[k] = v
    return out


def batch_items(n_items: int, step: int, index: int, total: int, batch_size: int, seed: int) -> list[int]:
    """Item ids of micro-batch ``index`` of ``total`` at optimizer ``step`` (``batch_size`` each)."""
    start = (step * total + index) * batch_size
    epoch_cache: dict[int, torch.Tensor] = {}
    out = []
    for pos in range(start, start + batch_size):
        epoch, offset = divmod(pos, n_items)
        if epoch not in epoch_cache:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            epoch_cache[epoch] = torch.randperm(n_items, generator=g)
        out.append(int(epoch_cache[epoch][offset]))
    return out
