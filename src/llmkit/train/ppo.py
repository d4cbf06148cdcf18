"""PPO as a Task for the one loop: InstructGPT-style RLHF (Ouyang et al. 2022).

Each round samples completions of a batch of prompts from the current policy and scores each one
once: by a reward model (``llmkit reward``) or by a reward function or verifier. The reward is
spread over the completion's tokens as a per-token penalty ``-kl_coef * (log pi_old - log ref)``
with the score added at the last token; a value head on the policy's trunk
(:class:`~llmkit.model.heads.PolicyWithValue`) estimates each state's return, GAE turns rewards and
values into advantages (whitened over the batch), and ``epochs x minibatches`` optimizer steps
minimise the clipped policy loss plus ``vf_coef`` times the clipped value loss, averaged over
completion tokens.
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
from llmkit.train.grpo import _mean_over_ranks
from llmkit.train.objectives import gae, ppo_policy_loss, ppo_value_loss, whiten
from llmkit.train.posttrain import check_same_vocabulary, fit_stage, load_frozen, load_trainable
from llmkit.train.rollout import (
    RLPrompt,
    RolloutTask,
    SamplingSettings,
    Scorer,
    chunked_logprobs,
    fitting,
    greedy_completions,
    reward_model_scorer,
    stop_ids,
)
from llmkit.train.sequences import token_logprobs
from llmkit.train.task_data import rl_prompts, rl_scorer


class PPOTask(RolloutTask):
    def __init__(
        self,
        prompts: Sequence[RLPrompt],
        scorer: Scorer,
        ref_model,
        tokenizer,
        *,
        prompts_per_round: int,
        samples: int,
        sampling: SamplingSettings,
        epochs: int = 4,
        minibatches: int = 1,
        grad_accum: int = 1,
        clip: float = 0.2,
        value_clip: float = 0.2,
        vf_coef: float = 0.1,
        gamma: float = 1.0,
        lam: float = 0.95,
        kl_coef: float = 0.05,
        eval_prompts: Sequence[RLPrompt] = (),
        seed: int = 1337,
        max_batch: int = 64,
        device="cpu",
    ):
        super().__init__(epochs, minibatches, seed, grad_accum, device)
        self.prompts, self.scorer, self.ref_model, self.tokenizer = list(prompts), scorer, ref_model, tokenizer
        self.per_round, self.samples, self.sampling = prompts_per_round, samples, sampling
        self.clip, self.value_clip, self.vf_coef = clip, value_clip, vf_coef
        self.gamma, self.lam, self.kl_coef = gamma, lam, kl_coef
        self.eval_prompts, self.max_batch = list(eval_prompts), max_batch

    def export(self, model):
        """Publish the policy alone (the value head only served training)."""
        return model.policy()

    # ---- rollouts -----------------------------------------------------------------------------
    @torch.no_grad()
    def _old(self, model, input_ids: torch.Tensor, rows: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs (N, L-1) and values (N, L-1) of the sampling policy, ``rows`` at a time."""
        lps, vals = [], []
        for i in range(0, input_ids.shape[0], rows):
            ids = input_ids[i : i + rows]
            logits, values = model(ids, values=True)  # (b, L, V), (b, L)
            lps.append(token_logprobs(logits, ids, self.sampling.temperature))
            vals.append(values[:, :-1])  # the state before each target token
        return torch.cat(lps), torch.cat(vals)

    def collect(self, model, round_index: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        got = self.rollout(model, round_index, "ppo")
        buf = got.buffer
        score = got.scores.to(self.device)  # (N,), NaN where the call failed
        failed = torch.isnan(score)
        mask = buf["loss_mask"]
        mask[failed] = 0.0
        old_logp, old_values = self._old(model, buf["input_ids"])  # (N, L-1) each
        ref_logp = chunked_logprobs(self.ref_model, buf["input_ids"], self.sampling.temperature)
        kl = (old_logp - ref_logp) * mask  # (N, L-1): k1 estimate per sampled token
        rewards = -self.kl_coef * kl
        last = (buf["lengths"] - 2).clamp(min=0)  # position of each row's last target
        rows = torch.arange(len(score), device=self.device)
        rewards[rows, last] += torch.where(failed, 0.0, score)
        adv, returns = gae(rewards, old_values, mask, self.gamma, self.lam)
        buf.update(
            old_logp=old_logp,
            old_values=old_values * mask,
            advantages=whiten(adv, mask),
            returns=returns,
        )
        valid = score[~failed]
        metrics = {
            "reward": float(valid.mean()) if valid.numel() else math.nan,
            "kl": float(kl.sum(1).mean()),
            "completion_tokens": float(mask.sum(1).mean()),
            "reward_failures": float(got.failures),
            "rollout_tokens_per_s": got.tokens_per_s,
        }
        return buf, _mean_over_ranks(metrics, self.info)

    # ---- loss ---------------------------------------------------------------------------------
    def make_batch(self, rows: dict[str, torch.Tensor]) -> dict[str, Any]:
        rows["count"] = float(rows["loss_mask"].sum())
        return rows

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch["loss_mask"]  # (b, L-1)
        logits, values = model(batch["input_ids"], values=True)  # (b, L, V), (b, L)
        logp = token_logprobs(logits, batch["input_ids"], self.sampling.temperature)  # (b, L-1)
        pg, clipped = ppo_policy_loss(logp, batch["old_logp"], batch["advantages"], self.clip)
        vl, vclipped = ppo_value_loss(values[:, :-1], batch["old_values"], batch["returns"], self.value_clip)
        n = mask.sum().clamp(min=1)
        per_token = pg + self.vf_coef * vl
        return (per_token * mask).sum(), {
            "policy_loss": float((pg.detach() * mask).sum() / n),
            "value_loss": float((vl.detach() * mask).sum() / n),
            "clip_frac": float((clipped.float() * mask).sum() / n),
            "value_clip_frac": float((vclipped.float() * mask).sum() / n),
        }

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, info: distributed.DistInfo) -> dict[str, float]:
        """Mean reward of greedy completions of the held-out prompts."""
        if not self.eval_prompts:
            return {}
        mine = self.eval_prompts[info.rank :: info.world_size]
        engine = self.engine(model, self.tokenizer, self.max_batch)
        scores, _ = self.scorer(mine, greedy_completions(engine, mine, self.sampling))
        valid = [x for x in scores if not math.isnan(x)]
        stats = torch.tensor([sum(valid), float(len(valid))], dtype=torch.float64, device=self.device)
        stats = distributed.all_reduce_sum(stats, info)
        return {"val_reward": float(stats[0] / stats[1].clamp(min=1))}


def load_reward_model(path: Path, device, tokenizer, model_config):
    """A reward model checkpoint (``llmkit reward``) for scoring, after the vocabulary check."""
    from llmkit.checkpoint import check_checkpoint, load_model
    from llmkit.model.heads import RewardModel

    archs = check_checkpoint(path).get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ConfigError(
            f"{path}: not a reward model (config.json architectures {archs}); train one with `llmkit reward`"
        )
    check_same_vocabulary(tokenizer, model_config, Path(path), "reward model")
    rm = load_model(path, device=device, model_class=RewardModel)
    rm.requires_grad_(False)
    return rm.eval()


def run_ppo(
    model_dir: Path,
    out_dir: Path,
    cfg: RunConfig,
    prompts: Sequence[RLPrompt] | None = None,
    eval_prompts: Sequence[RLPrompt] = (),
    scorer: Scorer | None = None,
) -> dict:
    """PPO from the checkpoint ``model_dir`` into ``out_dir`` (resuming), with ``cfg.ppo``'s settings.
    The reward comes from ``ppo.reward_model`` or ``ppo.reward`` unless a scorer is passed."""
    from llmkit.model.heads import PolicyWithValue

    c = cfg.ppo
    train_cfg = stage_train_config(cfg.train, c)
    info = distributed.setup(train_cfg.device)
    device = distributed.pick_device(train_cfg.device, info.local_rank)
    lm, tok = load_trainable(Path(model_dir), device)
    from_tasks = False
    if prompts is None:
        prompts, eval_prompts, from_tasks = rl_prompts(c.prompts, tok, c.task_examples, c.eval_prompts, train_cfg.seed)
    context = context_length(lm.config)
    prompts = fitting(prompts, context, c.max_new_tokens, "ppo prompts")
    eval_prompts = fitting(eval_prompts, context, c.max_new_tokens, "ppo held-out prompts") if eval_prompts else []
    if scorer is None:
        if c.reward_model and c.reward:
            raise ConfigError("ppo.reward_model and ppo.reward are both set; keep one")
        if not (c.reward_model or c.reward or from_tasks):
            raise ConfigError("ppo needs a reward: --reward-model DIR, --reward FILE.py:FN, or tasks:NAME prompts")
        if c.reward_model:
            scorer = reward_model_scorer(load_reward_model(Path(c.reward_model), device, tok, lm.config), tok.pad_id)
        else:
            scorer = rl_scorer(c.reward, from_tasks)
    ref = load_frozen(Path(model_dir), device, tok, lm.config, "reference")
    sampling = SamplingSettings(c.max_new_tokens, c.temperature, 0, 1.0, stop_ids(tok, prompts[0].chat))
    task = PPOTask(
        prompts,
        scorer,
        ref,
        tok,
        prompts_per_round=c.prompts_per_round,
        samples=c.samples,
        sampling=sampling,
        epochs=c.epochs,
        minibatches=c.minibatches,
        grad_accum=train_cfg.grad_accum,
        clip=c.clip,
        value_clip=c.value_clip,
        vf_coef=c.vf_coef,
        gamma=c.gamma,
        lam=c.lam,
        kl_coef=c.kl_coef,
        eval_prompts=eval_prompts,
        seed=train_cfg.seed,
        device=device,
    )
    if info.is_main:
        say(
            f"ppo: {len(prompts)} prompts, {c.prompts_per_round} x {c.samples} samples per round, "
            f"{c.epochs} x {c.minibatches} steps per round, {train_cfg.max_steps} steps on {device}"
        )
    model = PolicyWithValue.from_causal_lm(lm)
    return fit_stage(
        model,
        task,
        train_cfg,
        Path(out_dir),
        tok,
        "ppo",
        lora_rank=c.lora_rank,
        heads=[model.value_head],
        base_path=model_dir,
    )
