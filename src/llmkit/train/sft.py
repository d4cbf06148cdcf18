"""Supervised fine-tuning as a Task for the one loop: packed conversations, assistant-only loss,
held-out task accuracy through the inference engine.

A micro-batch is ``batch_size`` rows of at most ``seq_len`` tokens. Each row holds whole
conversations (packing) or one right-padded conversation (``pack=False``). Every token carries
the index of its conversation in the row (its *segment*) and its position inside it: attention is
causal *within* a segment only (a block-diagonal mask) and positions restart at 0, so a packed row
computes exactly what its conversations would alone, and the loss of a packed batch equals the
loss of the same conversations unpacked.

Rows are a pure function of the step: epoch ``e`` is the weighted mix of the datasets shuffled
with seed ``seed + e`` and packed in that order, and the global row stream is the concatenation of
epochs; step ``s`` takes the next ``batch_size x grad_accum x world`` rows. Resume is therefore exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from llmkit.data.chat import Encoded, mix, pack
from llmkit.errors import DataError
from llmkit.train import distributed

IGNORE = -100


def collate(items: Sequence[Sequence[Encoded]], seq_len: int, pad_id: int, pad_to: int | None = None) -> dict[str, Any]:
    """Rows of conversations -> tensors. ``input_ids``, ``labels`` (next token where the mask says
    the model learns it, else -100), ``position_ids`` (restarting per conversation) and
    ``attn_mask`` (B, 1, T, T): True where query i may attend to key j (same segment, j <= i)."""
    T = pad_to or max(sum(len(c) for c in row) for row in items)
    B = len(items)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    seg = torch.full((B, T), -1, dtype=torch.long)  # padding: a segment of its own
    for b, row in enumerate(items):
        t = 0
        for s, conv in enumerate(row):
            n = len(conv)
            ids[b, t : t + n] = torch.tensor(conv.ids)
            target = torch.tensor([*conv.ids[1:], IGNORE])  # (n,) the token each position predicts
            learn = torch.tensor([*conv.mask[1:], False])
            labels[b, t : t + n] = torch.where(learn, target, IGNORE)
            pos[b, t : t + n] = torch.arange(n)
            seg[b, t : t + n] = s
            t += n
        pos[b, t:] = torch.arange(T - t)
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T)
    same = seg[:, :, None] == seg[:, None, :]  # (B, T, T)
    attn_mask = (same & causal)[:, None]  # (B, 1, T, T)
    return {
        "input_ids": ids,
        "labels": labels,
        "position_ids": pos,
        "attn_mask": attn_mask,
        "count": int((labels != IGNORE).sum()),
        "tokens": int((seg >= 0).sum()),
    }


def sft_loss(model, batch: dict[str, Any]) -> torch.Tensor:
    """Sum of cross-entropy over the learned tokens of a batch from :func:`collate`."""
    logits = model(batch["input_ids"], position_ids=batch["position_ids"], attn_mask=batch["attn_mask"])  # (B, T, V)
    return F.cross_entropy(
        logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE, reduction="sum"
    )


class SFTTask:
    """Conversations (already encoded and fitted to ``seq_len``) from one or more datasets, mixed by
    weight, packed or padded; ``evaluate_fn(model) -> metrics`` measures held-out accuracy."""

    def __init__(
        self,
        datasets: Sequence[Sequence[Encoded]],
        weights: Sequence[float],
        seq_len: int,
        batch_size: int,
        pad_id: int,
        seed: int = 1337,
        packing: bool = True,
        evaluate_fn: Callable[[Any, distributed.DistInfo], dict[str, float]] | None = None,
        device="cpu",
    ):
        if not any(len(d) for d in datasets):
            raise DataError(
                "SFT data is empty after reading and length checks; give conversations that fit the context"
            )
        self.datasets = [list(d) for d in datasets]
        self.weights = list(weights)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.seed = seed
        self.packing = packing
        self.evaluate_fn = evaluate_fn
        self.device = torch.device(device)
        self._epochs: list[tuple[list[Encoded], list[list[int]]]] = []

    def epoch(self, e: int) -> tuple[list[Encoded], list[list[int]]]:
        """(items, rows of item indices) of epoch ``e``."""
        while len(self._epochs) <= e:
            k = len(self._epochs)
            items = mix(self.datasets, self.weights, self.seed * 1_000_003 + k)
            rows = pack([len(x) for x in items], self.seq_len) if self.packing else [[i] for i in range(len(items))]
            self._epochs.append((items, rows))
        return self._epochs[e]

    @property
    def rows_per_epoch(self) -> int:
        return len(self.epoch(0)[1])

    def steps_for(self, epochs: float, rows_per_step: int) -> int:
        """Optimizer steps that cover ``epochs`` passes over the mix."""
        total = 0
        whole = int(epochs)
        for e in range(whole):
            total += len(self.epoch(e)[1])
        if epochs > whole:
            total += round((epochs - whole) * len(self.epoch(whole)[1]))
        return max(1, -(-total // rows_per_step))

    def _row(self, r: int) -> list[Encoded]:
        e = 0
        while r >= len(self.epoch(e)[1]):
            r -= len(self.epoch(e)[1])
            e += 1
        items, rows = self.epoch(e)
        return [items[i] for i in rows[r]]

    def batch(self, step: int, index: int, total: int) -> dict[str, Any]:
        first = (step * total + index) * self.batch_size
        rows = [self._row(first + j) for j in range(self.batch_size)]
        batch = collate(rows, self.seq_len, self.pad_id)
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        return sft_loss(model, batch), {}

    def tokens(self, batch) -> int:
        return batch["tokens"]

    def evaluate(self, model, info: distributed.DistInfo) -> dict[str, float]:
        return self.evaluate_fn(model, info) if self.evaluate_fn else {}
