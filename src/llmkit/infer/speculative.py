"""Speculative decoding: a cheap proposer guesses k tokens, the target model checks them in one pass.

Two proposers:

* a **draft model** (a smaller model with the same tokenizer), run autoregressively for k steps;
* **prompt lookup** (draft-free): the last n tokens are searched for earlier in the text and the
  tokens that followed them are proposed; good when the output copies from the prompt.

Verification feeds ``[last token, d_1 .. d_k]`` to the target in one forward pass and gets its
distributions ``p_1 .. p_{k+1}``. Greedy: drafts are accepted while they equal the target's argmax,
and the first mismatch is replaced by the argmax, so the output equals plain greedy decoding.
Sampling (Leviathan et al. 2023; Chen et al. 2023): ``d_i`` is accepted with probability
``min(1, p_i(d_i) / q_i(d_i))``; on rejection a token is drawn from ``normalize(max(0, p_i - q_i))``;
if all k are accepted a bonus token is drawn from ``p_{k+1}``. Every emitted token is then
distributed exactly as under plain sampling from the target (prompt lookup is the case where q is
a point mass). The logits processors run per position with the history that position would have.

One sequence at a time (the usual setting for latency); both models keep their own KV cache,
rolled back by resetting lengths (stale slots are simply overwritten).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmkit.infer.engine import Completion, Engine, SeqState, StepOutput, TokenLogprob
from llmkit.infer.kv_cache import KVCache
from llmkit.infer.sampling import GenerationError, SamplingParams, draw
from llmkit.model.inference import prepare_for_inference


@dataclass
class SpecStats:
    """Counts over every sequence a decoder has generated."""

    drafted: int = 0
    accepted: int = 0
    target_forwards: int = 0
    tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_forward(self) -> float:
        return self.tokens / self.target_forwards if self.target_forwards else 0.0


class SpeculativeDecoder:
    """Generate with ``engine``'s model as the target and a draft model or prompt lookup.

    ``num_draft_tokens`` is k; ``lookup_ngram`` the longest n-gram prompt lookup tries to match.
    """

    def __init__(
        self,
        engine: Engine,
        draft_model=None,
        *,
        num_draft_tokens: int = 4,
        prompt_lookup: bool = False,
        lookup_ngram: int = 3,
    ):
        if draft_model is None and not prompt_lookup:
            raise GenerationError("speculative decoding needs a draft model or prompt_lookup=True")
        if num_draft_tokens < 1:
            raise GenerationError(f"num_draft_tokens={num_draft_tokens} must be >= 1")
        if draft_model is not None:
            dv, tv = draft_model.config.vocab_size, engine.config.vocab_size
            if dv != tv:
                raise GenerationError(
                    f"the draft model's vocabulary ({dv} tokens) differs from the target's ({tv}); "
                    "speculative decoding needs a draft trained with the same tokenizer"
                )
        self.engine = engine
        self.target = engine.model
        self.draft = draft_model.eval() if draft_model is not None else None
        if self.draft is not None and hasattr(self.draft, "lm_head"):
            prepare_for_inference(self.draft)
        self.k = num_draft_tokens
        self.lookup_ngram = lookup_ngram
        self.stats = SpecStats()

    def generate(self, prompt, params: SamplingParams | None = None) -> Completion:
        """The completion of one prompt (same result as plain greedy; same distribution when sampling)."""
        seq = None
        for out in self._run(prompt, params):
            seq = out
        return seq

    def stream(self, prompt, params: SamplingParams | None = None) -> Iterator[StepOutput]:
        """One :class:`StepOutput` per generated token, as :meth:`Engine.stream`."""
        yield from self._run(prompt, params, stream=True)

    # ------------------------------------------------------------------ the loop
    @torch.inference_mode()
    def _run(self, prompt, params, stream: bool = False):
        params = (params or SamplingParams()).validate()
        if params.n != 1 or params.num_beams != 1:
            raise GenerationError("speculative decoding produces one sample: use n=1 and num_beams=1")
        eng = self.engine
        seq = eng.new_sequence(eng.fit_prompt(prompt, params), params, params.seed)
        room = seq.max_total + self.k + 1
        tcache = _cache_for(self.target, room)
        dcache = _cache_for(self.draft, room) if self.draft is not None else None
        self._tlen = self._dlen = 0  # tokens whose keys/values each cache holds
        while not seq.finished:
            history = seq.prompt + seq.tokens
            k = min(self.k, seq.max_total - len(history) - 1)
            if self.draft is not None:
                drafts, q = self._propose_draft(seq, history, k, dcache) if k > 0 else ([], None)
            else:
                drafts, q = self._propose_lookup(history, k), None
            new, lps, accepted = self._verify(seq, history, drafts, q, tcache)
            self.stats.drafted += len(drafts)
            self.stats.accepted += accepted
            self.stats.target_forwards += 1
            self._tlen = len(history) + accepted  # the target's cache is valid up to here
            self._dlen = min(self._dlen, len(history) + accepted)
            for tok, lp in zip(new, lps, strict=True):
                out = seq.push(tok, lp)
                self.stats.tokens += 1
                if stream:
                    yield out
                if seq.finished:
                    break
        if not stream:
            yield seq.completion()

    def _verify(self, seq: SeqState, history: list[int], drafts: list[int], q, cache: KVCache):
        """Run the target on the unseen tokens + drafts; return (new tokens, logprobs, #accepted)."""
        feed = history[self._tlen :] + drafts  # (T,) at least the last token
        start = self._tlen
        logits = _forward(self.target, feed, start, cache)[-(len(drafts) + 1) :]  # (k+1, V)
        p_logits = _process(seq, logits, drafts)
        greedy = seq.params.greedy
        gen = seq.gen
        new: list[int] = []
        accepted, rejected = 0, False
        for i, d in enumerate(drafts):
            if greedy:
                best = int(p_logits[i].argmax())
                new.append(best)
                if best != d:
                    rejected = True
                    break
                accepted += 1
                continue
            p = p_logits[i].softmax(-1)
            qd = q[i] if q is not None else F.one_hot(torch.tensor(d), p.numel()).float()
            if torch.rand((), generator=gen) < torch.clamp(p[d] / qd[d], max=1.0):
                new.append(d)
                accepted += 1
                continue
            residual = (p - qd).clamp_(min=0)
            if residual.sum() <= 0:  # p == q: any draw from p is exact
                residual = p
            new.append(int(draw(residual[None], [gen])[0]))
            rejected = True
            break
        if not rejected:  # all accepted: the bonus token from p_{k+1}
            last = p_logits[len(drafts)]
            new.append(int(last.argmax()) if greedy else int(draw(last.softmax(-1)[None], [gen])[0]))
        lps = [None] * len(new)
        if seq.params.logprobs is not None:
            logp = F.log_softmax(logits[: len(new)], -1)
            k = seq.params.logprobs
            lps = []
            for i, t in enumerate(new):
                top = []
                if k:
                    values, indices = logp[i].topk(k)
                    top = list(zip(indices.tolist(), values.tolist(), strict=True))
                lps.append(TokenLogprob(t, float(logp[i, t]), top))
        return new, lps, accepted

    def _propose_draft(self, seq: SeqState, history: list[int], k: int, cache: KVCache):
        feed = history[self._dlen :]
        logits = _forward(self.draft, feed, self._dlen, cache)[-1:]  # (1, V)
        self._dlen = len(history)
        drafts, qs = [], []
        for i in range(k):
            ql = _process(seq, logits, drafts, rows=[len(drafts)])[0]  # (V,)
            if seq.params.greedy:
                d = int(ql.argmax())
                qs.append(F.one_hot(torch.tensor(d), ql.numel()).float())
            else:
                qp = ql.softmax(-1)
                d = int(draw(qp[None], [seq.gen])[0])
                qs.append(qp)
            drafts.append(d)
            if i < k - 1:
                logits = _forward(self.draft, [d], self._dlen, cache)  # (1, V)
                self._dlen += 1
        return drafts, torch.stack(qs) if qs else None

    def _propose_lookup(self, history: list[int], k: int) -> list[int]:
        """The k tokens that followed the latest earlier occurrence of the longest matching suffix."""
        if k <= 0:
            return []
        for n in range(min(self.lookup_ngram, len(history) - 1), 0, -1):
            tail = history[-n:]
            for start in range(len(history) - n - 1, -1, -1):
                if history[start : start + n] == tail:
                    return history[start + n : start + n + k]
        return []


def _cache_for(model, length: int) -> KVCache | None:
    if model is None:
        return None
    return KVCache.for_model(model, 1, length)


def _forward(model, tokens: list[int], start: int, cache: KVCache) -> torch.Tensor:
    """Logits (T, V) for ``tokens`` placed at positions start.. with the cache holding [0, start)."""
    T = len(tokens)
    dev = cache.k[0].device
    pos = torch.arange(start, start + T, device=dev)[None]  # (1, T)
    cache.bind(slice(0, 1), [start], T)
    mask = None
    if start > 0 and T > 1:  # causal within the new tokens, everything before them visible
        mask = (torch.arange(start + T, device=dev)[None, :] <= pos[0][:, None])[None, None]  # (1, 1, T, S)
    return model(torch.tensor([tokens], device=dev), position_ids=pos, attn_mask=mask, kv_cache=cache)[0].float()


def _process(seq: SeqState, logits: torch.Tensor, drafts: list[int], rows: list[int] | None = None) -> torch.Tensor:
    """Run the sequence's logits processors on logits (R, V) where row r continues
    ``history + drafts[:rows[r]]`` (default rows 0..R-1), so penalties see the right history."""
    pipe = seq.pipe
    rows = list(range(logits.size(0))) if rows is None else rows
    R, V = logits.size(0), logits.size(1)
    seen = counts = None
    if pipe.needs_seen:
        seen = seq.seen.expand(R, V).clone()
        for r, j in enumerate(rows):
            if j:
                seen[r, drafts[:j]] = True
    if pipe.needs_counts:
        counts = seq.counts.expand(R, V).clone()
        for r, j in enumerate(rows):
            for t in drafts[:j]:
                counts[r, t] += 1
    history = seq.prompt + seq.tokens
    return pipe(
        logits,
        seen=seen,
        counts=counts,
        token_lists=[history + drafts[:j] for j in rows] if pipe.needs_tokens else None,
        n_generated=torch.tensor([len(seq.tokens) + j for j in rows], device=logits.device)
        if pipe.stop_mask is not None
        else None,
    )
