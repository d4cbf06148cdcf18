"""Reward modelling as a Task for the one loop: a scalar head learns which of two answers is
preferred (Bradley-Terry: P(chosen > rejected) = sigmoid(r_chosen - r_rejected)), as in InstructGPT.

The model is a :class:`~llmkit.model.heads.RewardModel` started from a language model's body.
Held-out pairwise accuracy (how often the chosen answer scores higher) is the measure of success.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llmkit.config import RunConfig, stage_train_config
from llmkit.console import say
from llmkit.train import distributed
from llmkit.train.objectives import bradley_terry_loss
from llmkit.train.posttrain import fit_stage, load_trainable
from llmkit.train.preference import EncodedPair, load_pairs, pair_rows
from llmkit.train.sequences import batch_items
from llmkit.train.task_data import preference_data


class RewardTask:
    def __init__(
        self,
        pairs: Sequence[EncodedPair],
        pad_id: int,
        *,
        batch_size: int = 8,
        eval_pairs: Sequence[EncodedPair] = (),
        seed: int = 1337,
        device="cpu",
    ):
        self.pairs, self.eval_pairs = list(pairs), list(eval_pairs)
        self.pad_id, self.batch_size, self.seed, self.device = pad_id, batch_size, seed, torch.device(device)

    def _rows(self, pairs: Sequence[EncodedPair]) -> dict[str, Any]:
        rows = pair_rows(pairs, self.pad_id, self.device)
        rows["count"] = len(pairs)
        return rows

    def batch(self, step: int, index: int, total: int) -> dict[str, Any]:
        ids = batch_items(len(self.pairs), step, index, total, self.batch_size, self.seed)
        return self._rows([self.pairs[i] for i in ids])

    def tokens(self, batch) -> int:
        return int(batch["input_ids"].numel())

    @staticmethod
    def scores(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Rewards of the chosen and rejected rows (b,) each."""
        r = model(batch["input_ids"], batch["lengths"])  # (2b,)
        b = r.shape[0] // 2
        return r[:b], r[b:]

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected = self.scores(model, batch)
        gap = (chosen - rejected).detach()  # (b,)
        return bradley_terry_loss(chosen, rejected).sum(), {
            "accuracy": float((gap > 0).float().mean()),
            "margin": float(gap.mean()),
        }

    @torch.no_grad()
    def evaluate(self, model, info: distributed.DistInfo) -> dict[str, float]:
        """Held-out Bradley-Terry loss, pairwise accuracy and mean reward margin."""
        if not self.eval_pairs:
            return {}
        idx = list(range(info.rank, len(self.eval_pairs), info.world_size))
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss, correct, margin, pairs
        for i in range(0, len(idx), self.batch_size):
            part = [self.eval_pairs[j] for j in idx[i : i + self.batch_size]]
            chosen, rejected = self.scores(model, self._rows(part))
            sums[0] += bradley_terry_loss(chosen, rejected).sum().double()
            sums[1] += (chosen > rejected).sum().double()
            sums[2] += (chosen - rejected).sum().double()
            sums[3] += len(part)
        loss, correct, margin, n = distributed.all_reduce_sum(sums, info).tolist()
        n = max(n, 1.0)
        return {"val_loss": loss / n, "val_accuracy": correct / n, "val_margin": margin / n}


def run_reward(model_dir: Path, out_dir: Path, cfg: RunConfig, pairs=None) -> dict:
    """A reward model from the checkpoint ``model_dir`` (its body, a fresh score head) into
    ``out_dir`` (resuming), saved as a one-label sequence classifier."""
    from llmkit.model.heads import RewardModel, sequence_classifier_config

    r = cfg.reward
    train_cfg = stage_train_config(cfg.train, r)
    info = distributed.setup(train_cfg.device)
    device = distributed.pick_device(train_cfg.device, info.local_rank)
    lm, tok = load_trainable(Path(model_dir), device)
    if pairs is None:
        pairs = preference_data(r.data, r, tok, lm, train_cfg.seed) or r.data
    train, val, stats = load_pairs(pairs, tok, r.max_len, r.val_fraction)
    torch.manual_seed(train_cfg.seed)
    model = RewardModel.from_causal_lm(lm)
    del lm
    task = RewardTask(train, tok.pad_id, batch_size=r.batch_size, eval_pairs=val, seed=train_cfg.seed, device=device)
    if info.is_main:
        for w in stats.warnings():
            say(f"reward: warning: {w}")
        say(f"reward: {len(train)} pairs ({len(val)} held out), {train_cfg.max_steps} steps on {device}")
    extra = sequence_classifier_config(model.config)
    return fit_stage(
        model, task, train_cfg, Path(out_dir), tok, "reward", extra, lora_rank=r.lora_rank, heads=[model.score]
    )
