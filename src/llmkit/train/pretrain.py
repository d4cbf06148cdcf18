"""Pretraining as a Task for the one loop: next-token prediction on random windows of the shards.

A micro-batch is ``batch_size`` windows of ``seq_len + 1`` tokens at offsets drawn from a generator
seeded by (seed, step): batches depend only on the step, which is what makes resume exact and
lets DDP ranks take disjoint rows of the same global batch. Validation reports loss in nats per
token and bits per byte (tokenizer-independent, so runs with different vocabularies compare),
overall and for each held-out source.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from llmkit.errors import DataError
from llmkit.train import distributed

if TYPE_CHECKING:
    from llmkit.data.shards import TokenShards


class PretrainTask:
    def __init__(
        self,
        train: TokenShards,
        val: dict[str, TokenShards],
        seq_len: int,
        batch_size: int,
        token_bytes: torch.Tensor,
        seed: int = 1337,
        eval_batches: int = 8,
        device="cpu",
    ):
        if len(train) < seq_len + 2:
            raise DataError(
                f"training corpus has {len(train)} tokens, fewer than one sequence "
                f"(train.seq_len={seq_len}); add text or lower train.seq_len"
            )
        self.train = train
        self.val = {k: v for k, v in val.items() if len(v) >= 2}
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.token_bytes = token_bytes.to(device)  # (V,) UTF-8 bytes per token id, 0 for specials
        self.seed = seed
        self.eval_batches = eval_batches
        self.device = torch.device(device)

    def _windows(self, shards: TokenShards, starts) -> torch.Tensor:
        rows = [shards.window(int(s), self.seq_len + 1) for s in starts]
        return torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, T+1)

    def batch(self, step: int, index: int, total: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        starts = torch.randint(0, len(self.train) - self.seq_len - 1, (total * self.batch_size,), generator=g)
        mine = starts[index * self.batch_size : (index + 1) * self.batch_size]
        xy = self._windows(self.train, mine.tolist()).to(self.device)  # (B, T+1)
        return {"input_ids": xy[:, :-1], "labels": xy[:, 1:], "count": xy.shape[0] * self.seq_len}

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["input_ids"])  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), reduction="sum")
        return loss, {}

    def tokens(self, batch) -> int:
        return int(batch["input_ids"].numel())

    @torch.no_grad()
    def evaluate(self, model, info: distributed.DistInfo) -> dict[str, float]:
        """Loss and bits/byte on evenly spaced windows of each validation set (same ones every time)."""
        out: dict[str, float] = {}
        tot_nats, tot_bytes, tot_tokens = 0.0, 0.0, 0
        for name, shards in self.val.items():
            T = min(self.seq_len, len(shards) - 1)
            n = self.eval_batches * self.batch_size
            starts = np.linspace(0, len(shards) - T - 1, num=n).astype(np.int64)
            starts = np.unique(starts)[info.rank :: info.world_size]
            stats = torch.zeros(3, dtype=torch.float64, device=self.device)  # nats, bytes, tokens
            for i in range(0, len(starts), self.batch_size):
                rows = [shards.window(int(s), T + 1) for s in starts[i : i + self.batch_size]]
                xy = torch.from_numpy(np.stack(rows).astype(np.int64)).to(self.device)  # (b, T+1)
                logits = model(xy[:, :-1])  # (b, T, V)
                nats = F.cross_entropy(logits.float().flatten(0, 1), xy[:, 1:].flatten(), reduction="none")
                nbytes = self.token_bytes[xy[:, 1:].flatten()]
                stats += torch.stack(
                    [
                        nats.sum().double(),
                        nbytes.sum().double(),
                        torch.tensor(float(nats.numel()), dtype=torch.float64, device=self.device),
                    ]
                )
            stats = distributed.all_reduce_sum(stats, info)
            nats_sum, bytes_sum, ntok = stats.tolist()
            if ntok == 0:
                continue
            suffix = "" if len(self.val) == 1 else f"/{name}"
            out[f"val_loss{suffix}"] = nats_sum / ntok
            out[f"val_bpb{suffix}"] = nats_sum / (math.log(2) * max(bytes_sum, 1.0))
            tot_nats, tot_bytes, tot_tokens = tot_nats + nats_sum, tot_bytes + bytes_sum, tot_tokens + ntok
        if len(self.val) > 1 and tot_tokens:
            out["val_loss"] = tot_nats / tot_tokens
            out["val_bpb"] = tot_nats / (math.log(2) * max(tot_bytes, 1.0))
        return out
