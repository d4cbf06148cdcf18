"""DPO as a Task for the one loop: preference pairs against a frozen reference.

The reference's log-probabilities of every answer never change, so they are computed once, by the
one continuation scorer (:func:`llmkit.infer.scoring.score`), and cached beside the run
(``ref_logps.pt``): a resumed run neither recomputes them nor loads the reference again. Each step
then needs only the policy's forward pass over the chosen and rejected rows.

Reported: the loss, the implicit rewards ``beta * log(pi / ref)`` of chosen and rejected answers,
their margin, and preference accuracy (how often the chosen answer's reward is higher), on the
training batches and on held-out pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llmkit.config import RunConfig, stage_train_config
from llmkit.console import say
from llmkit.errors import ConfigError
from llmkit.infer.scoring import score
from llmkit.train import distributed
from llmkit.train.objectives import DPO_LOSSES, dpo_loss
from llmkit.train.posttrain import check_choice, check_same_vocabulary, fit_stage, load_frozen, load_trainable
from llmkit.train.preference import EncodedPair, load_pairs, pair_rows
from llmkit.train.sequences import batch_items, model_logprobs
from llmkit.train.task_data import preference_data


def pairs_fingerprint(pairs: Sequence[EncodedPair]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(repr((p.prompt, p.chosen, p.rejected)).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def reference_logps(ref_model, pairs: Sequence[EncodedPair], batch_size: int = 16) -> torch.Tensor:
    """Summed log-probabilities (N, 2) of each pair's chosen and rejected answer under ``ref_model``."""
    requests = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    scored = score(ref_model, requests, batch_size=batch_size)
    values = torch.tensor([s.logprob for s in scored], dtype=torch.float32)  # (2N,)
    return values.view(2, -1).T.contiguous()  # (N, 2)


def cached_reference_logps(path: Path, ref_loader, pairs: Sequence[EncodedPair]) -> torch.Tensor:
    """:func:`reference_logps` read from ``path`` when it was computed for these pairs, else computed
    (loading the reference with ``ref_loader()``) and saved there."""
    key = pairs_fingerprint(pairs)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") == key:
            return saved["logps"]
    values = reference_logps(ref_loader(), pairs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"fingerprint": key, "logps": values}, tmp)
    tmp.replace(path)
    return values


class DPOTask:
    def __init__(
        self,
        pairs: Sequence[EncodedPair],
        ref_logps: torch.Tensor,
        pad_id: int,
        *,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        batch_size: int = 8,
        eval_pairs: Sequence[EncodedPair] = (),
        eval_ref_logps: torch.Tensor | None = None,
        seed: int = 1337,
        device="cpu",
    ):
        self.pairs, self.ref = list(pairs), ref_logps  # (N, 2)
        self.eval_pairs, self.eval_ref = list(eval_pairs), eval_ref_logps
        self.pad_id, self.beta, self.loss_type, self.smoothing = pad_id, beta, loss_type, label_smoothing
        self.batch_size, self.seed, self.device = batch_size, seed, torch.device(device)

    def _rows(self, pairs: Sequence[EncodedPair], ref: torch.Tensor) -> dict[str, Any]:
        rows = pair_rows(pairs, self.pad_id, self.device)
        rows["ref"] = ref.to(self.device)  # (b, 2)
        rows["count"] = len(pairs)
        return rows

    def batch(self, step: int, index: int, total: int) -> dict[str, Any]:
        ids = batch_items(len(self.pairs), step, index, total, self.batch_size, self.seed)
        return self._rows([self.pairs[i] for i in ids], self.ref[ids])

    def tokens(self, batch) -> int:
        return int(batch["input_ids"].numel())

    def _pair_losses(self, model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = batch["loss_mask"]  # (2b, L-1)
        logp = (model_logprobs(model, batch["input_ids"]) * mask).sum(-1)  # (2b,)
        tokens = mask.sum(-1)  # (2b,)
        b = logp.shape[0] // 2
        return dpo_loss(
            logp[:b],
            logp[b:],
            batch["ref"][:, 0],
            batch["ref"][:, 1],
            self.beta,
            self.loss_type,
            self.smoothing,
            tokens[:b],
            tokens[b:],
        )

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        losses, chosen, rejected = self._pair_losses(model, batch)
        return losses.sum(), {
            "reward_chosen": float(chosen.mean()),
            "reward_rejected": float(rejected.mean()),
            "margin": float((chosen - rejected).mean()),
            "accuracy": float((chosen > rejected).float().mean()),
        }

    @torch.no_grad()
    def evaluate(self, model, info: distributed.DistInfo) -> dict[str, float]:
        """Held-out loss, implicit-reward margin and preference accuracy."""
        if not self.eval_pairs:
            return {}
        idx = list(range(info.rank, len(self.eval_pairs), info.world_size))
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss, margin, correct, pairs
        for i in range(0, len(idx), self.batch_size):
            part = idx[i : i + self.batch_size]
            batch = self._rows([self.eval_pairs[j] for j in part], self.eval_ref[part])
            losses, chosen, rejected = self._pair_losses(model, batch)
            margin = chosen - rejected
            sums[0] += losses.sum().double()
            sums[1] += margin.sum().double()
            sums[2] += (margin > 0).sum().double()
            sums[3] += len(part)
        loss, margin, correct, n = distributed.all_reduce_sum(sums, info).tolist()
        n = max(n, 1.0)
        return {"val_loss": loss / n, "val_margin": margin / n, "val_accuracy": correct / n}


def run_dpo(model_dir: Path, out_dir: Path, cfg: RunConfig, pairs=None) -> dict:
    """DPO from the checkpoint ``model_dir`` into ``out_dir`` (resuming), with ``cfg.dpo``'s settings;
    pairs from ``dpo.data`` unless given (a list of PreferencePair)."""
    d = cfg.dpo
    check_choice(d.loss, DPO_LOSSES, "dpo.loss")
    if not 0.0 <= d.label_smoothing < 0.5:
        raise ConfigError(f"dpo.label_smoothing={d.label_smoothing} must be in [0, 0.5)")
    train_cfg = stage_train_config(cfg.train, d)
    info = distributed.setup(train_cfg.device)
    device = distributed.pick_device(train_cfg.device, info.local_rank)
    model, tok = load_trainable(Path(model_dir), device)
    if pairs is None:
        pairs = preference_data(d.data, d, tok, model, train_cfg.seed) or d.data
    train, val, stats = load_pairs(pairs, tok, d.max_len, d.val_fraction)
    if d.ref:
        check_same_vocabulary(tok, model.config, Path(d.ref), "reference")

    def reference():  # the starting weights, unless another reference is named
        return load_frozen(Path(d.ref), device, tok, model.config, "reference") if d.ref else model

    ref = cached_reference_logps(Path(out_dir) / "ref_logps.pt", reference, train + val)
    task = DPOTask(
        train,
        ref[: len(train)],
        tok.pad_id,
        beta=d.beta,
        loss_type=d.loss,
        label_smoothing=d.label_smoothing,
        batch_size=d.batch_size,
        eval_pairs=val,
        eval_ref_logps=ref[len(train) :],
        seed=train_cfg.seed,
        device=device,
    )
    if info.is_main:
        for w in stats.warnings():
            say(f"dpo: warning: {w}")
        say(f"dpo: {len(train)} pairs ({len(val)} held out), beta {d.beta}, {d.loss} loss, {train_cfg.max_steps} steps")
    return fit_stage(model, task, train_cfg, Path(out_dir), tok, "dpo", lora_rank=d.lora_rank, base_path=model_dir)
