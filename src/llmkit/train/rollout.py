"""On-policy rollouts for the one training loop: the part GRPO and PPO share.

An RL run is a sequence of rounds. A round samples completions for a batch of prompts from the
*current* weights through llmkit's inference engine (batched prefill and decode over a KV cache,
the weights packed for it; the packed copies follow the optimizer's in-place updates), scores them,
and then serves ``epochs x minibatches`` optimizer steps from that fixed batch. :class:`RolloutTask`
maps this onto the loop's ``Task`` protocol: ``prepare`` collects a round when one is due, ``batch``
takes a minibatch of it, and ``state_dict`` carries an unfinished round's batch into
``trainer_state.pt``.

Reproducibility: sample ``i`` of a round draws from its own generator seeded by (seed, round, i),
so the same weights and seed give the same rollouts whatever else runs; a run killed between
rounds regenerates the next round exactly, and one killed inside a round resumes from the saved
batch. Either way it reaches bitwise the same weights on CPU as an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llmkit.console import say
from llmkit.errors import ConfigError
from llmkit.infer.engine import Completion, Engine
from llmkit.infer.sampling import SamplingParams
from llmkit.train import distributed
from llmkit.train.rewards import RewardFn, RewardStats, call_rewards
from llmkit.train.sequences import batch_items, model_logprobs, pack_completions, select_rows

SEED_STRIDE = 1 << 20
"""Seeds of one round's samples are ``base + i`` for i < SEED_STRIDE, so rounds never share one."""


@dataclass
class RLPrompt:
    """A prompt to roll out: its token ids (chat template applied), its text (what reward
    functions see) and the extra fields handed to the reward function (``answer``, an example...)."""

    ids: list[int]
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    chat: bool = False
    """Rendered with the chat template (the reply ends at the end-of-turn token)."""


@dataclass
class SamplingSettings:
    """How rollouts are sampled."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop_ids: tuple[int, ...] = ()


def encode_prompts(tokenizer, rows) -> list[RLPrompt]:
    """:class:`~llmkit.data.prompts.PromptRow` s as token ids: chat messages through the chat
    template (ready for the assistant's turn), plain text with BOS."""
    from llmkit.infer.engine import chat_prompt_ids

    out = []
    for row in rows:
        ids = chat_prompt_ids(tokenizer, row.messages) if row.messages else tokenizer.encode(row.text, bos=True)
        out.append(RLPrompt(ids, row.text, dict(row.fields), chat=bool(row.messages)))
    return out


def stop_ids(tokenizer, chat: bool) -> tuple[int, ...]:
    """Where a rollout ends: the chat template's end-of-turn tokens for chat prompts (EOS always)."""
    from llmkit.infer.engine import chat_stop_ids

    return tuple(chat_stop_ids(tokenizer)) if chat else ()


def round_seed(seed: int, round_index: int) -> int:
    return (seed * 7919 + round_index + 1) * SEED_STRIDE


@dataclass
class Rollouts:
    """One round's completions as training rows (:func:`pack_completions`' buffer) and rewards."""

    buffer: dict[str, torch.Tensor]
    scores: torch.Tensor  # (N,) one per completion, NaN where the reward call failed
    failures: int
    tokens_per_s: float  # generated tokens over generation time


class RolloutTask:
    """Round bookkeeping for on-policy tasks; subclasses implement :meth:`collect` (rollouts ->
    a packed buffer of rows plus metrics), :meth:`make_batch` and ``loss``.

    A round's rows (this process's share) are split into ``minibatches`` optimizer steps per epoch,
    visited ``epochs`` times in a fresh seeded order each epoch.
    """

    def __init__(self, epochs: int, minibatches: int, seed: int, grad_accum: int, device="cpu"):
        if epochs < 1 or minibatches < 1:
            raise ConfigError("epochs and minibatches per rollout batch must be at least 1")
        self.epochs, self.minibatches, self.seed, self.grad_accum = epochs, minibatches, seed, grad_accum
        self.device = torch.device(device)
        self.steps_per_round = epochs * minibatches
        self.buffer: dict[str, torch.Tensor] | None = None
        self.buffer_round = -1
        self.round_metrics: dict[str, float] = {}
        self.info = distributed.DistInfo()
        self._engine: Engine | None = None
        self._warned_reward = False

    # ---- the Task protocol -------------------------------------------------------------------
    def prepare(self, model, step: int, info: distributed.DistInfo) -> dict[str, float]:
        """Collect the round that ``step`` belongs to unless it is already in the buffer; returns
        that round's metrics on each of its steps (so every logged row has the latest ones)."""
        self.info = info
        r = step // self.steps_per_round
        if r != self.buffer_round:
            self.buffer, self.round_metrics = self.collect(model, r)
            self.buffer_round = r
        return self.round_metrics

    def batch(self, step: int, index: int, total: int) -> dict[str, Any]:
        assert self.buffer is not None, "prepare() runs before batch()"
        j = step % self.steps_per_round
        epoch, mb = divmod(j, self.minibatches)
        n = self.buffer["input_ids"].shape[0]
        g = torch.Generator().manual_seed(round_seed(self.seed, self.buffer_round) + epoch)
        order = torch.randperm(n, generator=g) if self.steps_per_round > 1 else torch.arange(n)
        per_step = n // self.minibatches
        rows = order[mb * per_step : (mb + 1) * per_step]
        micro = total // self.info.world_size
        size = per_step // micro
        m = index // self.info.world_size
        return self.make_batch(select_rows(self.buffer, rows[m * size : (m + 1) * size]))

    def tokens(self, batch) -> int:
        return int(batch["input_ids"].numel())

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.buffer_round, "buffer": dict(self.buffer or {}), "metrics": dict(self.round_metrics)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("buffer"):
            self.buffer = {k: v.to(self.device) for k, v in state["buffer"].items()}
            self.buffer_round = int(state["round"])
            self.round_metrics = dict(state.get("metrics") or {})

    # ---- for subclasses ----------------------------------------------------------------------
    def rollout(self, model, round_index: int, what: str) -> Rollouts:
        """One round's samples, packed and scored: this process's prompts of the round, ``samples``
        completions of each from the weights being trained, their rewards (NaN where a reward call
        failed, warned about once). Subclasses set ``prompts``, ``per_round``, ``samples``,
        ``sampling``, ``scorer``, ``tokenizer`` and ``max_batch``; ``what`` names the stage in messages."""
        self.check_divisible(self.per_round * self.samples // self.info.world_size, f"{what} prompts x samples")
        prompts = self.round_prompts(self.prompts, self.per_round, round_index)
        engine = self.engine(model, self.tokenizer, self.max_batch)
        seed = round_seed(self.seed, round_index) + self.info.rank * len(prompts) * self.samples
        t0 = time.perf_counter()
        flat = [c for g in sample_completions(engine, prompts, self.samples, self.sampling, seed) for c in g]
        seconds = time.perf_counter() - t0
        rep = [p for p in prompts for _ in range(self.samples)]
        scores, stats = self.scorer(rep, flat)
        if stats.failures and not self._warned_reward:
            say(f"{what}: a reward call failed ({stats.first_error}); such samples are left out and counted")
            self._warned_reward = True
        buf = pack_completions([p.ids for p in rep], [c.token_ids for c in flat], self.tokenizer.pad_id, self.device)
        return Rollouts(
            buffer=buf,
            scores=torch.tensor(scores),
            failures=stats.failures,
            tokens_per_s=sum(len(c.token_ids) for c in flat) / max(seconds, 1e-9),
        )

    def collect(self, model, round_index: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        raise NotImplementedError

    def make_batch(self, rows: dict[str, torch.Tensor]) -> dict[str, Any]:
        raise NotImplementedError

    def check_divisible(self, rows_per_round: int, what: str) -> None:
        """Every optimizer step and micro-batch must get the same number of whole rows."""
        world = self.info.world_size
        need = self.minibatches * self.grad_accum * world
        if rows_per_round % need:
            raise ConfigError(
                f"{what} = {rows_per_round} rollouts per round cannot be split into {self.minibatches} minibatches x "
                f"{self.grad_accum} micro-batches x {world} processes; make it a multiple of {need}"
            )

    def round_prompts(self, prompts: Sequence[RLPrompt], per_round: int, round_index: int) -> list[RLPrompt]:
        """This process's prompts for a round: the round's slice of an epoch-shuffled stream of all
        prompts, dealt across processes."""
        ids = batch_items(len(prompts), round_index, 0, 1, per_round, self.seed)
        return [prompts[i] for i in ids[self.info.rank :: self.info.world_size]]

    def engine(self, model, tokenizer, max_batch: int) -> Engine:
        """The engine over the policy being trained (created once; it samples from the weights as
        they are at each call: its packed copies are rebuilt after every optimizer update)."""
        if self._engine is None or self._engine.model is not model:
            self._engine = Engine(model, tokenizer, max_batch=max_batch)
        return self._engine


def sample_completions(
    engine: Engine, prompts: Sequence[RLPrompt], samples: int, settings: SamplingSettings, seed: int
) -> list[list]:
    """``samples`` completions of each prompt (``result[p][i]``), sample ``i`` of prompt ``p``
    drawing from the generator seeded ``seed + p * samples + i``."""
    params = SamplingParams(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        stop_token_ids=list(settings.stop_ids),
        n=samples,
        seed=seed,
    )
    return engine.generate([p.ids for p in prompts], params)


@torch.no_grad()
def chunked_logprobs(model, input_ids: torch.Tensor, temperature: float, rows: int = 16) -> torch.Tensor:
    """:func:`~llmkit.train.sequences.model_logprobs` over a large buffer, ``rows`` at a time (B, L-1)."""
    parts = [model_logprobs(model, input_ids[i : i + rows], temperature) for i in range(0, input_ids.shape[0], rows)]
    return torch.cat(parts)


def greedy_completions(engine: Engine, prompts: Sequence[RLPrompt], settings: SamplingSettings) -> list[Completion]:
    """One greedy completion per prompt (held-out evaluation)."""
    params = SamplingParams(
        max_new_tokens=settings.max_new_tokens, temperature=0.0, stop_token_ids=list(settings.stop_ids)
    )
    return [c[0] for c in engine.generate([p.ids for p in prompts], params)]


Scorer = Callable[[Sequence[RLPrompt], Sequence[Completion]], tuple[list[float], RewardStats]]
"""(prompts, their completions) -> one reward per completion (NaN where scoring failed), and stats."""


def function_scorer(fn: RewardFn, where: str = "reward function") -> Scorer:
    """Rewards from ``fn(prompt=text, completion=text, **fields)`` (a user's function or a verifier)."""

    def scorer(prompts: Sequence[RLPrompt], completions: Sequence[Completion]):
        return call_rewards(
            fn, [p.text for p in prompts], [c.text for c in completions], [p.fields for p in prompts], where
        )

    return scorer


def reward_model_scorer(reward_model, pad_id: int, rows: int = 16) -> Scorer:
    """Scores of a :class:`~llmkit.model.heads.RewardModel`, read at each completion's last token."""

    @torch.no_grad()
    def scorer(prompts: Sequence[RLPrompt], completions: Sequence[Completion]):
        device = next(reward_model.parameters()).device
        out: list[float] = []
        for i in range(0, len(prompts), rows):
            packed = pack_completions(
                [p.ids for p in prompts[i : i + rows]], [c.token_ids for c in completions[i : i + rows]], pad_id, device
            )
            out += reward_model(packed["input_ids"], packed["lengths"]).tolist()
        return out, RewardStats(calls=len(out))

    return scorer


def prompts_from_file(path: str, tokenizer, n_eval: int, seed: int = 0) -> tuple[list[RLPrompt], list[RLPrompt]]:
    """Training and held-out prompts from a JSONL file: ``n_eval`` rows (at most a fifth) chosen by a
    stable hash of their text are held out for evaluation."""
    from llmkit.data.prompts import read_prompts
    from llmkit.data.sources import split_key

    rows = read_prompts(path)
    k = min(n_eval, len(rows) // 5)
    order = sorted(range(len(rows)), key=lambda i: split_key(rows[i].text, seed))
    held = set(order[:k])
    train = [r for i, r in enumerate(rows) if i not in held]
    val = [r for i, r in enumerate(rows) if i in held]
    return encode_prompts(tokenizer, train), encode_prompts(tokenizer, val)


def fitting(prompts: Sequence[RLPrompt], context: int, max_new_tokens: int, what: str) -> list[RLPrompt]:
    """The prompts that leave room for ``max_new_tokens`` in the model's context; the others are
    dropped and counted (a cut question would be a different question). None left is an error."""
    kept = [p for p in prompts if len(p.ids) + max_new_tokens <= context]
    if prompts and not kept:
        raise ConfigError(
            f"{what}: no prompt fits the model's context of {context} tokens with {max_new_tokens} new tokens; "
            "use shorter prompts or fewer max_new_tokens"
        )
    if len(kept) < len(prompts):
        from llmkit.console import say

        say(f"{what}: skipped {len(prompts) - len(kept)} of {len(prompts)} prompts too long for the context")
    return kept
