"""GRPO as a Task for the one loop: group-relative policy optimisation with verifiable rewards.

Each round samples G completions of P prompts from the current policy, scores each with a reward
function (a task verifier or a user's function), and turns rewards into advantages by normalising
within each prompt's group (no value model: the group is the baseline). The policy is then updated
``epochs x minibatches`` times with PPO's clipped ratio, optionally with a k3 KL penalty to a frozen
reference, under one of three loss normalisations (:func:`~llmkit.train.objectives.aggregate`).

References: Shao et al. 2024 (DeepSeekMath, GRPO), Yu et al. 2025 (DAPO: token-level loss,
clip-higher), Liu et al. 2025 (Dr. GRPO: no length or std normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llmkit.config import RunConfig, stage_train_config
from llmkit.console import say
from llmkit.errors import ConfigError
from llmkit.infer.engine import context_length
from llmkit.train import distributed
from llmkit.train.objectives import LOSS_NORMS, aggregate, group_advantages, kl_penalty, loss_count, ppo_policy_loss
from llmkit.train.posttrain import check_choice, fit_stage, load_frozen, load_trainable
from llmkit.train.rollout import (
    RLPrompt,
    RolloutTask,
    SamplingSettings,
    Scorer,
    chunked_logprobs,
    fitting,
    greedy_completions,
    stop_ids,
)
from llmkit.train.sequences import model_logprobs
from llmkit.train.task_data import rl_prompts, rl_scorer


class GRPOTask(RolloutTask):
    def __init__(
        self,
        prompts: Sequence[RLPrompt],
        scorer: Scorer,
        tokenizer,
        *,
        prompts_per_round: int,
        samples: int,
        sampling: SamplingSettings,
        epochs: int = 1,
        minibatches: int = 1,
        grad_accum: int = 1,
        clip: float = 0.2,
        clip_high: float | None = None,
        kl_coef: float = 0.0,
        loss_norm: str = "token",
        scale_advantages: bool = True,
        ref_model=None,
        eval_prompts: Sequence[RLPrompt] = (),
        seed: int = 1337,
        max_batch: int = 64,
        device="cpu",
    ):
        super().__init__(epochs, minibatches, seed, grad_accum, device)
        if samples < 2:
            raise ConfigError("grpo.samples must be at least 2: advantages compare samples of one prompt")
        if kl_coef and ref_model is None:
            raise ValueError("a KL penalty needs a reference model")
        self.prompts, self.scorer, self.tokenizer = list(prompts), scorer, tokenizer
        self.per_round, self.samples, self.sampling = prompts_per_round, samples, sampling
        self.clip, self.clip_high, self.kl_coef = clip, clip_high, kl_coef
        self.loss_norm, self.scale = loss_norm, scale_advantages
        self.ref_model, self.eval_prompts = ref_model, list(eval_prompts)
        self.max_batch = max_batch

    # ---- rollouts -----------------------------------------------------------------------------
    def collect(self, model, round_index: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        got = self.rollout(model, round_index, "grpo")
        buf, r = got.buffer, got.scores  # r (P*G,), NaN where the call failed
        adv = group_advantages(r, self.samples, scale=self.scale)  # (P*G,), 0 where failed
        buf["loss_mask"][torch.isnan(r)] = 0.0
        buf["advantages"] = adv.to(self.device)
        if self.steps_per_round > 1:  # the policy moves within the round: ratios need the sampling policy
            buf["old_logp"] = chunked_logprobs(model, buf["input_ids"], self.sampling.temperature)
        if self.kl_coef:
            buf["ref_logp"] = chunked_logprobs(self.ref_model, buf["input_ids"], self.sampling.temperature)
        valid = r[~torch.isnan(r)]
        grouped = r.view(-1, self.samples)
        flat_groups = (grouped.nan_to_num(0).std(1) == 0).float().mean()
        metrics = {
            "reward": float(valid.mean()) if valid.numel() else math.nan,
            "reward_std": float(valid.std()) if valid.numel() > 1 else 0.0,
            "completion_tokens": float(buf["loss_mask"].sum(1).mean()),
            "flat_groups": float(flat_groups),  # groups with one reward: no signal
            "reward_failures": float(got.failures),
            "rollout_tokens_per_s": got.tokens_per_s,
        }
        return buf, _mean_over_ranks(metrics, self.info)

    # ---- loss ---------------------------------------------------------------------------------
    def make_batch(self, rows: dict[str, torch.Tensor]) -> dict[str, Any]:
        rows["count"] = loss_count(rows["loss_mask"], self.loss_norm, self.sampling.max_new_tokens)
        return rows

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch["loss_mask"]  # (b, L-1)
        logp = model_logprobs(model, batch["input_ids"], self.sampling.temperature)  # (b, L-1)
        old = batch.get("old_logp", logp.detach())
        per_token, clipped = ppo_policy_loss(logp, old, batch["advantages"][:, None], self.clip, self.clip_high)
        n = mask.sum().clamp(min=1)
        metrics = {"clip_frac": float((clipped.float() * mask).sum() / n)}
        if self.kl_coef:
            kl = kl_penalty(logp, batch["ref_logp"], "k3")  # (b, L-1)
            per_token = per_token + self.kl_coef * kl
            metrics["kl"] = float((kl.detach() * mask).sum() / n)
        return aggregate(per_token, mask, self.loss_norm), metrics

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, info: distributed.DistInfo) -> dict[str, float]:
        """Mean reward of greedy completions of the held-out prompts."""
        if not self.eval_prompts:
            return {}
        mine = self.eval_prompts[info.rank :: info.world_size]
        engine = self.engine(model, self.tokenizer, self.max_batch)
        rewards, _ = self.scorer(mine, greedy_completions(engine, mine, self.sampling))
        valid = [x for x in rewards if not math.isnan(x)]
        stats = torch.tensor([sum(valid), float(len(valid))], dtype=torch.float64)
        stats = distributed.all_reduce_sum(stats.to(next(model.parameters()).device), info).cpu()
        return {"val_reward": float(stats[0] / stats[1].clamp(min=1))}


def _mean_over_ranks(metrics: dict[str, float], info: distributed.DistInfo) -> dict[str, float]:
    if not info.enabled:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=info.device)
    t = distributed.all_reduce_sum(t, info) / info.world_size
    return dict(zip(keys, t.tolist(), strict=True))


def run_grpo(
    model_dir: Path,
    out_dir: Path,
    cfg: RunConfig,
    prompts: Sequence[RLPrompt] | None = None,
    eval_prompts: Sequence[RLPrompt] = (),
    scorer: Scorer | None = None,
) -> dict:
    """GRPO from the checkpoint ``model_dir`` into ``out_dir`` (resuming), with ``cfg.grpo``'s
    settings. Prompts and scorer default to ``grpo.prompts`` (a JSONL file) and ``grpo.reward``
    (``path/to/file.py:function``); callers with the task suite pass their own."""
    g = cfg.grpo
    check_choice(g.loss_norm, LOSS_NORMS, "grpo.loss_norm")
    train_cfg = stage_train_config(cfg.train, g)
    info = distributed.setup(train_cfg.device)
    device = distributed.pick_device(train_cfg.device, info.local_rank)
    model, tok = load_trainable(Path(model_dir), device)
    from_tasks = False
    if prompts is None:
        prompts, eval_prompts, from_tasks = rl_prompts(g.prompts, tok, g.task_examples, g.eval_prompts, train_cfg.seed)
    context = context_length(model.config)
    prompts = fitting(prompts, context, g.max_new_tokens, "grpo prompts")
    eval_prompts = fitting(eval_prompts, context, g.max_new_tokens, "grpo held-out prompts") if eval_prompts else []
    if scorer is None:
        scorer = rl_scorer(g.reward, from_tasks)
    sampling = SamplingSettings(g.max_new_tokens, g.temperature, 0, g.top_p, stop_ids(tok, prompts[0].chat))
    ref = load_frozen(Path(model_dir), device, tok, model.config, "reference") if g.kl_coef else None
    task = GRPOTask(
        prompts,
        scorer,
        tok,
        prompts_per_round=g.prompts_per_round,
        samples=g.samples,
        sampling=sampling,
        epochs=g.epochs,
        minibatches=g.minibatches,
        grad_accum=train_cfg.grad_accum,
        clip=g.clip,
        clip_high=g.clip_high or None,
        kl_coef=g.kl_coef,
        loss_norm=g.loss_norm,
        scale_advantages=g.scale_advantages,
        ref_model=ref,
        eval_prompts=eval_prompts,
        seed=train_cfg.seed,
        device=device,
    )
    if info.is_main:
        say(
            f"grpo: {len(prompts)} prompts, {g.prompts_per_round} x {g.samples} samples per round, "
            f"{g.epochs} x {g.minibatches} steps per round, {train_cfg.max_steps} steps on {device}"
        )
    return fit_stage(model, task, train_cfg, Path(out_dir), tok, "grpo", lora_rank=g.lora_rank, base_path=model_dir)
