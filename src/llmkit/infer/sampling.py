"""Decoding options, the logits processors and the sampler.

A decoding strategy is a chain of small functions over the next-token logits ``(N, V)`` followed
by a choice (argmax or a draw). The chain always runs in this fixed order, and a step whose option
is at its neutral value is skipped entirely:

 1. logit bias            additive per-token bias (OpenAI ``logit_bias``; transformers ``SequenceBias``
                          with single-token keys)
 2. repetition penalty    multiplicative, over prompt + generated tokens (transformers semantics:
                          positive logits divided, negative multiplied)
 3. presence/frequency    additive, over generated tokens only (OpenAI formula:
                          ``logit - frequency * count - presence * (count > 0)``)
 4. no-repeat n-gram      bans tokens that would repeat an n-gram of prompt + generated tokens
 5. banned / allowed ids  ``-inf`` outside the allowed set, ``-inf`` on banned ids
 6. min new tokens        ``-inf`` on EOS and stop token ids until ``min_new_tokens`` are generated
 7. temperature           divide by T (T = 0 means greedy: argmax, steps 8-11 are skipped)
 8. top-k                 keep the k most likely
 9. top-p                 keep the smallest set with cumulative probability >= p
10. min-p                 keep tokens with probability >= min_p * max probability
11. typical-p             locally typical sampling

Penalties come before temperature so that they do not depend on it; truncations come after it,
as in transformers, so each function here matches the transformers ``LogitsProcessor`` of the same
name on the same input (tests/test_sampling.py checks that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import torch
import torch.nn.functional as F

from llmkit.errors import LLMKitError

NEG_INF = float("-inf")


class GenerationError(LLMKitError):
    """A decoding option or prompt the engine cannot honour (one line: which option, what to do)."""


@dataclass
class SamplingParams:
    """Every decoding option of one request. Defaults are neutral (plain sampling at T=1)."""

    max_new_tokens: int = 256
    """Stop after this many new tokens (also stops at the model's context length)."""
    temperature: float = 1.0
    """0 = greedy (argmax); otherwise logits are divided by it before truncation and sampling."""
    top_k: int = 0
    """Keep the k most likely tokens (0 = all)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set whose probability reaches p; in (0, 1]."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the most likely one; in [0, 1]."""
    typical_p: float = 1.0
    """Locally typical sampling mass; in (0, 1] (1 = off)."""
    repetition_penalty: float = 1.0
    """Multiplicative penalty on tokens already in prompt or output (>1 discourages); > 0."""
    presence_penalty: float = 0.0
    """OpenAI-style: subtract this from every token that already occurred in the output."""
    frequency_penalty: float = 0.0
    """OpenAI-style: subtract this times the token's count in the output."""
    no_repeat_ngram_size: int = 0
    """Never repeat an n-gram of this size (prompt included); 0 = off."""
    logit_bias: dict[int, float] | None = None
    """Token id -> additive bias (OpenAI ``logit_bias``); -100 effectively bans, +100 forces."""
    allowed_token_ids: list[int] | None = None
    """If set, only these ids may be generated (EOS/stop ids are not added implicitly)."""
    banned_token_ids: list[int] | None = None
    """These ids are never generated."""
    min_new_tokens: int = 0
    """EOS and stop token ids are suppressed until this many tokens were generated."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: generation ends where one appears; it is not part of the text."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Extra token ids that end generation (EOS always does, unless ``ignore_eos``)."""
    ignore_eos: bool = False
    """Keep generating past EOS (benchmarks)."""
    seed: int | None = None
    """Seed of this request's random generator (the i-th of several samples uses seed + i)."""
    logprobs: int | None = None
    """Return the chosen token's log-probability and this many top alternatives per step."""
    num_beams: int = 1
    """Beam search with this many beams (greedy beams: temperature is ignored, no sampling)."""
    length_penalty: float = 1.0
    """Beam search: finished scores are sum(logprob) / length ** length_penalty."""
    early_stopping: bool = False
    """Beam search: stop as soon as num_beams hypotheses are finished."""
    n: int = 1
    """Samples per prompt; they share the prompt's prefill (KV cache copied, not recomputed)."""
    truncate_prompt: bool = False
    """Left-truncate a prompt that does not fit the context instead of failing."""

    def validate(self) -> SamplingParams:
        """Raise GenerationError naming the first bad option; return self for chaining."""

        def bad(name, why):
            raise GenerationError(f"{name}={getattr(self, name)!r}: {why}")

        self._check_types()

        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            bad("max_new_tokens", "must be a positive integer")
        if self.temperature is None or not self.temperature >= 0 or math.isinf(self.temperature):
            bad("temperature", "must be >= 0 (0 = greedy)")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            bad("top_k", "must be an integer >= 0 (0 = off)")
        if not 0 < self.top_p <= 1:
            bad("top_p", "must be in (0, 1] (1 = off)")
        if not 0 <= self.min_p <= 1:
            bad("min_p", "must be in [0, 1] (0 = off)")
        if not 0 < self.typical_p <= 1:
            bad("typical_p", "must be in (0, 1] (1 = off)")
        if not self.repetition_penalty > 0:
            bad("repetition_penalty", "must be > 0 (1 = off)")
        if not isinstance(self.no_repeat_ngram_size, int) or self.no_repeat_ngram_size < 0:
            bad("no_repeat_ngram_size", "must be an integer >= 0 (0 = off)")
        if self.min_new_tokens < 0:
            bad("min_new_tokens", "must be >= 0")
        if self.logprobs is not None and self.logprobs < 0:
            bad("logprobs", "must be >= 0 (number of top alternatives)")
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            bad("num_beams", "must be a positive integer")
        if not isinstance(self.n, int) or self.n < 1:
            bad("n", "must be a positive integer")
        if self.allowed_token_ids is not None and len(self.allowed_token_ids) == 0:
            bad("allowed_token_ids", "is empty; nothing could be generated (use None for no restriction)")
        if self.allowed_token_ids and set(self.allowed_token_ids) <= set(self.banned_token_ids or ()):
            bad("banned_token_ids", "bans every id in allowed_token_ids; nothing could be generated")
        if self.num_beams > 1:
            if self.temperature > 0 and (self.top_k or self.top_p < 1 or self.min_p or self.typical_p < 1):
                raise GenerationError(
                    f"num_beams={self.num_beams} with sampling options (top_k/top_p/min_p/typical_p) is not "
                    "supported; beam search is deterministic: drop the sampling options or use num_beams=1"
                )
            if self.n > self.num_beams:
                bad("n", f"must be <= num_beams={self.num_beams} (returns the n best beams)")
            if self.stop:
                bad("stop", "stop strings are not supported with beam search; use stop_token_ids")
        if any(not s for s in self.stop):
            bad("stop", "stop strings must be non-empty")
        return self

    def _check_types(self) -> None:
        """Every option has its annotated type (a value from a chat command, a JSON body or a
        keyword argument may be a string); numbers are normalised (an int where a float goes)."""
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _FIELD_KINDS[f.name]
            if value is None and kind.endswith("?"):
                continue
            ok, value = _coerce(value, kind.rstrip("?"))
            if not ok:
                raise GenerationError(f"{f.name}={getattr(self, f.name)!r}: must be {_KIND_WORDS[kind.rstrip('?')]}")
            setattr(self, f.name, value)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_(self, **kw) -> SamplingParams:
        return replace(self, **kw)


PARAM_NAMES = tuple(f.name for f in fields(SamplingParams))

_FIELD_KINDS = {
    f.name: {
        "int": "int",
        "float": "float",
        "bool": "bool",
        "int | None": "int?",
        "float | None": "float?",
        "list[str]": "strs",
        "list[int]": "ints",
        "list[int] | None": "ints?",
        "dict[int, float] | None": "bias?",
    }[str(f.type)]
    for f in fields(SamplingParams)
}
_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "strs": "a list of strings",
    "ints": "a list of integer token ids",
    "bias": "a mapping of token id to a number",
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _coerce(value, kind: str):
    """(ok, value in its canonical type) for one option of kind ``int``, ``float``, ``bool``,
    ``strs``, ``ints`` or ``bias`` (JSON object keys are strings: ``{"50": -100}`` is accepted)."""
    if kind == "int":
        return _is_int(value), value
    if kind == "float":
        ok = _is_int(value) or isinstance(value, float)
        return ok, float(value) if ok else value
    if kind == "bool":
        return isinstance(value, bool), value
    if kind == "strs":
        if isinstance(value, str):
            return True, [value]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        return ok, list(value) if ok else value
    if kind == "ints":
        ok = isinstance(value, (list, tuple)) and all(_is_int(v) for v in value)
        return ok, list(value) if ok else value
    if kind == "bias":
        if not isinstance(value, dict):
            return False, value
        try:
            out = {int(k): float(v) for k, v in value.items() if not isinstance(v, (bool, str))}
        except (TypeError, ValueError):
            return False, value
        return len(out) == len(value), out
    raise AssertionError(kind)


# --- the processors (each matches transformers' processor of the same name) -------------------


def apply_logit_bias(logits: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """logits (N, V) + bias (V,) or (N, V)."""
    return logits + bias


def bias_vector(logit_bias: dict[int, float], vocab_size: int, device) -> torch.Tensor:
    """Dense (V,) bias from ``{token_id: bias}``."""
    bias = torch.zeros(vocab_size, device=device)
    for tok, b in logit_bias.items():
        tok = int(tok)
        if not 0 <= tok < vocab_size:
            raise GenerationError(f"logit_bias token id {tok} is outside the vocabulary (0..{vocab_size - 1})")
        bias[tok] = float(b)
    return bias


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Tokens with ``seen`` (N, V) bool: positive logits / penalty, negative logits * penalty."""
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def apply_presence_frequency(
    logits: torch.Tensor, counts: torch.Tensor, presence: float, frequency: float
) -> torch.Tensor:
    """OpenAI: ``logit[j] - counts[j] * frequency - (counts[j] > 0) * presence`` (counts over output)."""
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence


def banned_ngram_tokens(tokens: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already present in ``tokens``."""
    if len(tokens) < n:
        return []
    prefix = tuple(tokens[len(tokens) - n + 1 :])
    return [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == prefix]


def apply_no_repeat_ngram(logits: torch.Tensor, token_lists: list[list[int]], n: int) -> torch.Tensor:
    """Ban, per row, every token that would repeat an n-gram of that row's tokens."""
    out = logits
    for row, toks in enumerate(token_lists):
        banned = banned_ngram_tokens(toks, n)
        if banned:
            if out is logits:
                out = logits.clone()
            out[row, banned] = NEG_INF
    return out


def apply_token_mask(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-inf where ``mask`` (V,) is True (banned ids, or everything outside the allowed ids)."""
    return logits.masked_fill(mask, NEG_INF)


def apply_min_new_tokens(logits: torch.Tensor, stop_mask: torch.Tensor, too_short: torch.Tensor) -> torch.Tensor:
    """-inf on stop tokens (``stop_mask`` (V,)) for rows where ``too_short`` (N,) is True."""
    return logits.masked_fill(too_short[:, None] & stop_mask[None, :], NEG_INF)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits / temperature


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits (ties with the k-th are kept, as in transformers)."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k)[0][..., -1, None]  # (N, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: drop the low tail whose total probability is <= 1 - p (at least one token stays)."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)  # (N, V) ascending
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove = cum <= (1 - p)
    remove[..., -1:] = False
    return logits.masked_fill(remove.scatter(1, sorted_idx, remove), NEG_INF)


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below ``min_p`` times the top token's."""
    probs = logits.softmax(-1)
    remove = probs < min_p * probs.amax(-1, keepdim=True)
    remove.scatter_(-1, probs.argmax(-1, keepdim=True), False)
    return logits.masked_fill(remove, NEG_INF)


def apply_typical_p(logits: torch.Tensor, mass: float) -> torch.Tensor:
    """Locally typical sampling (Meister et al. 2022): keep tokens whose surprisal is closest to
    the entropy until their probability reaches ``mass``."""
    logp = F.log_softmax(logits, -1)
    ent = -(logp * logp.exp()).nansum(-1, keepdim=True)  # (N, 1)
    shifted = (-logp - ent).abs()
    sorted_scores, sorted_idx = torch.sort(shifted, descending=False)
    cum = logits.gather(-1, sorted_idx).softmax(-1).cumsum(-1)
    last = (cum < mass).sum(dim=1).clamp_(max=logits.size(-1) - 1)
    remove = sorted_scores > sorted_scores.gather(1, last.view(-1, 1))
    remove[..., :1] = False
    return logits.masked_fill(remove.scatter(1, sorted_idx, remove), NEG_INF)


# --- the chain ----------------------------------------------------------------------------------


class LogitsPipeline:
    """The processors enabled by one ``SamplingParams``, precomputed once per request.

    ``__call__(logits, state)`` runs steps 1-11 of the module docstring for a group of rows that
    share these params; ``state`` supplies the per-row token history the penalties need.
    """

    def __init__(self, params: SamplingParams, vocab_size: int, stop_ids: list[int], device):
        self.p = params
        self.vocab_size = vocab_size
        if params.logprobs is not None and params.logprobs > vocab_size:
            raise GenerationError(f"logprobs={params.logprobs}: there are only {vocab_size} tokens to list")
        self.bias = bias_vector(params.logit_bias, vocab_size, device) if params.logit_bias else None
        mask = None
        if params.allowed_token_ids is not None:
            mask = torch.ones(vocab_size, dtype=torch.bool, device=device)
            mask[_checked_ids(params.allowed_token_ids, vocab_size, "allowed_token_ids")] = False
        if params.banned_token_ids:
            mask = torch.zeros(vocab_size, dtype=torch.bool, device=device) if mask is None else mask
            mask[_checked_ids(params.banned_token_ids, vocab_size, "banned_token_ids")] = True
        self.token_mask = mask
        self.stop_mask = None
        if params.min_new_tokens > 0 and stop_ids:
            self.stop_mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            self.stop_mask[[t for t in stop_ids if 0 <= t < vocab_size]] = True
        self.needs_seen = params.repetition_penalty != 1.0
        self.needs_counts = bool(params.presence_penalty or params.frequency_penalty)
        self.needs_tokens = params.no_repeat_ngram_size > 0
        # pipelines with equal keys process logits identically, so the engine runs their rows as one group
        self.key = (
            tuple(sorted((params.logit_bias or {}).items())),
            params.repetition_penalty,
            params.presence_penalty,
            params.frequency_penalty,
            params.no_repeat_ngram_size,
            None if params.allowed_token_ids is None else tuple(sorted(params.allowed_token_ids)),
            tuple(sorted(params.banned_token_ids or ())),
            params.min_new_tokens,
            tuple(stop_ids) if self.stop_mask is not None else (),
            params.temperature,
            params.top_k,
            params.top_p,
            params.min_p,
            params.typical_p,
            params.num_beams > 1,
        )

    def __call__(
        self, logits: torch.Tensor, seen=None, counts=None, token_lists=None, n_generated: torch.Tensor | None = None
    ) -> torch.Tensor:
        """logits (N, V) fp32 -> processed logits (N, V). Greedy skips the truncation steps."""
        p = self.p
        if self.bias is not None:
            logits = apply_logit_bias(logits, self.bias)
        if self.needs_seen:
            logits = apply_repetition_penalty(logits, seen, p.repetition_penalty)
        if self.needs_counts:
            logits = apply_presence_frequency(logits, counts, p.presence_penalty, p.frequency_penalty)
        if self.needs_tokens:
            logits = apply_no_repeat_ngram(logits, token_lists, p.no_repeat_ngram_size)
        if self.token_mask is not None:
            logits = apply_token_mask(logits, self.token_mask)
        if self.stop_mask is not None and n_generated is not None:
            logits = apply_min_new_tokens(logits, self.stop_mask, n_generated < p.min_new_tokens)
        if p.temperature == 0 or p.num_beams > 1:
            return logits
        if p.temperature != 1.0:
            logits = apply_temperature(logits, p.temperature)
        if p.top_k > 0:
            logits = apply_top_k(logits, p.top_k)
        if p.top_p < 1.0:
            logits = apply_top_p(logits, p.top_p)
        if p.min_p > 0.0:
            logits = apply_min_p(logits, p.min_p)
        if p.typical_p < 1.0:
            logits = apply_typical_p(logits, p.typical_p)
        return logits


def _checked_ids(ids, vocab_size: int, name: str) -> list[int]:
    ids = [int(t) for t in ids]
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise GenerationError(f"{name} contains id {bad[0]} outside the vocabulary (0..{vocab_size - 1})")
    return ids


def sample(logits: torch.Tensor, greedy: bool, generators: list[torch.Generator | None] | None = None) -> torch.Tensor:
    """Choose one token per row of processed logits (N, V) -> (N,).

    Greedy is argmax. Sampling draws from softmax(logits); with per-row ``generators`` each row
    draws from its own seeded stream, so a row's result does not depend on what else is in the
    batch (reproducible per request).
    """
    if greedy:
        return logits.argmax(-1)
    return draw(logits.softmax(-1), generators)


def draw(weights: torch.Tensor, generators: list[torch.Generator | None] | None = None) -> torch.Tensor:
    """One index per row of non-negative ``weights`` (N, V) -> (N,), index i with probability
    ``weights[i] / row sum`` (rows need not sum to 1; zero-weight indices are never drawn).

    Inverse-CDF: one uniform per row from the row's generator (the global RNG where None), then a
    binary search of the row's cumulative sum. ``torch.multinomial`` draws one exponential per
    vocabulary entry instead: 11x slower for 32 rows of 4,096 (docs/BENCHMARKS.md, "Sampling").
    """
    N = weights.size(0)
    if generators is None or all(g is None for g in generators):
        u = torch.rand(N, device=weights.device)
    else:
        u = torch.cat([torch.rand(1, generator=g, device=weights.device) for g in generators])  # (N,)
    cdf = weights.float().cumsum(-1)  # (N, V)
    # (1 - u) lies in (0, 1], so the target is above 0 and at most the total: the first index whose
    # cumulative sum reaches it has a weight above zero
    total = cdf[:, -1]  # (N,)
    if not bool((total > 0).all()):  # also False for NaN
        raise GenerationError("no token can be sampled: the options leave every token at probability 0")
    target = (1.0 - u) * total  # (N,)
    idx = torch.searchsorted(cdf, target[:, None]).squeeze(-1)  # (N,)
    return idx.clamp_(max=weights.size(-1) - 1)
