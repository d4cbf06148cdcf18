"""The inference engine: prefill, decode, batching, streaming, stopping, beam search.

Everything that turns a model into text goes through :class:`Engine`: ``llmkit generate``,
``llmkit chat``, ``llmkit sample``, ``LoadedModel.generate`` and (later) the server and RL rollouts.

How a request runs:

* **prefill**: the prompt goes through the model in one forward pass; its keys/values land in a
  preallocated :class:`~llmkit.infer.kv_cache.KVCache` row; the last position's logits give the
  first new token. Prompts of different lengths are prefilled together, right-padded (a causal
  mask is all they need, because every row starts at slot 0).
* **decode**: one token per step for every running sequence, each at its own position; a mask is
  only built when the rows' lengths differ.
* **n samples** of one prompt share its prefill: the cache row is copied, not recomputed.
* **the step API** (:meth:`Engine.add`, :meth:`Engine.step`, :meth:`Engine.remove`) is what a
  continuous-batching scheduler drives: sequences join and leave between steps; running rows are
  kept contiguous (a finished row is filled by moving the last row into it), so decode reads
  cache views and never gathers.
* **admission** between steps is first come, first served, whole requests at a time, under three
  bounds: ``max_batch`` rows, ``max_batch_tokens`` KV slots (rows x the longest row's reserved
  length, which is what the cache holds and a decode step attends over) and ``prefill_budget``
  prompt tokens per step (so a burst of new prompts delays the running sequences by at most one
  bounded prefill). A request that waits is never overtaken, so a long one cannot be starved by
  short ones; every running sequence advances one token per step, so short ones are never
  starved by long ones.

Text is produced incrementally from token bytes, holding back incomplete UTF-8 sequences and
possible beginnings of stop strings, so streamed deltas are always whole characters and their
concatenation is exactly the final text.
"""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from llmkit.infer.kv_cache import KV_CACHE_KINDS, KVCache
from llmkit.infer.prefix_cache import PrefixCache
from llmkit.infer.sampling import GenerationError, LogitsPipeline, SamplingParams, sample
from llmkit.model.inference import prepare_for_inference


@dataclass
class TokenLogprob:
    """One generated token with its log-probability under the model and the top alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Completion:
    """The result of one sequence."""

    text: str
    token_ids: list[int]
    finish_reason: str
    """``stop`` (EOS, a stop token id or a stop string) or ``length`` (max_new_tokens or context)."""
    prompt_tokens: int
    logprobs: list[TokenLogprob] | None = None
    score: float | None = None
    """Beam search: the length-penalised score of this hypothesis."""


@dataclass
class StepOutput:
    """What one sequence produced in one :meth:`Engine.step`."""

    seq_id: int
    token_id: int
    text: str
    """New text that is safe to show (may be empty while bytes or a stop prefix are held back)."""
    finished: bool
    finish_reason: str | None = None
    logprob: TokenLogprob | None = None


def context_length(config) -> int:
    """Tokens the model may attend to: ``max_position_embeddings``, times the RoPE scaling factor
    when the scaling config does not name the original length (as transformers reads it)."""
    rs = getattr(config, "rope_scaling", None) or {}
    factor = rs.get("factor")
    if (
        factor
        and "original_max_position_embeddings" not in rs
        and rs.get("rope_type", rs.get("type")) in ("linear", "dynamic", "yarn")
    ):
        return int(config.max_position_embeddings * factor)
    return config.max_position_embeddings


class _TextStream:
    """Token ids -> text deltas: whole UTF-8 characters only, stop strings cut and withheld."""

    def __init__(self, table: list[bytes], stops: Sequence[str]):
        self.table = table
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.stops = list(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token: int) -> str:
        new = self.decoder.decode(self.table[token] if token < len(self.table) else b"")
        if not new:
            return ""
        start = max(0, len(self.text) - self.hold)
        self.text += new
        if not self.stops:
            return self._take(len(self.text))
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
            return self._take(len(self.text))
        return self._take(len(self.text) - self._partial_stop())

    def finish(self) -> str:
        if not self.stopped:
            self.text += self.decoder.decode(b"", final=True)
        return self._take(len(self.text))

    def _partial_stop(self) -> int:
        """Length of the longest tail of the text that could still grow into a stop string."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:k]):
                    best = k
                    break
        return best

    def _take(self, upto: int) -> str:
        upto = max(upto, self.emitted)
        out = self.text[self.emitted : upto]
        self.emitted = upto
        return out


def token_byte_table(tokenizer) -> list[bytes]:
    """Bytes of every token id (special tokens -> b"", so they never appear in text)."""
    specials = set(getattr(tokenizer, "special_ids", ()) or ())
    for name in ("bos_id", "eos_id", "pad_id"):
        if getattr(tokenizer, name, None) is not None:
            specials.add(getattr(tokenizer, name))
    if hasattr(tokenizer, "token_byte_strings"):
        table = list(tokenizer.token_byte_strings())
    else:  # a tokenizer without byte access: decode ids one by one (fine for non-byte-level vocabularies)
        table = [tokenizer.decode([i]).encode("utf-8") for i in range(tokenizer.vocab_size)]
    return [b"" if i in specials else bytes(b) for i, b in enumerate(table)]


def whole_characters(tokenizer, token_ids: Sequence[int]) -> str:
    """The text of ``token_ids`` without an unfinished multi-byte character at the end (a Chinese
    character is 3 bytes, often 2 tokens, and max_new_tokens may end generation between them):
    what a sample shown to a person should end with, instead of U+FFFD."""
    table = token_byte_table(tokenizer)
    raw = b"".join(table[t] if t < len(table) else b"" for t in token_ids)
    return codecs.getincrementaldecoder("utf-8")("replace").decode(raw)


class SeqState:
    """One sequence being generated (one prompt, one sample): tokens, penalty state, text,
    stopping. Made by :meth:`Engine.new_sequence`; the engine owns its cache row."""

    def __init__(
        self,
        seq_id: int,
        prompt: list[int],
        params: SamplingParams,
        pipe: LogitsPipeline,
        stop_ids: set[int],
        max_total: int,
        seed: int | None,
        stream: _TextStream | None,
        device,
    ):
        self.id = seq_id
        self.prompt = prompt
        self.params = params
        self.pipe = pipe
        self.stop_ids = stop_ids
        self.max_total = max_total  # prompt + generated tokens may not exceed this
        self.gen = None
        if seed is not None:
            self.gen = torch.Generator(device=device)
            self.gen.manual_seed(seed)
        self.stream = stream
        self.tokens: list[int] = []
        self.cache_len = 0  # tokens whose keys/values are in the cache
        self.finished = False
        self.finish_reason: str | None = None
        self.logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        self.share_from: SeqState | None = None
        self.seen = self.counts = None
        V = pipe.vocab_size
        if pipe.needs_seen:
            self.seen = torch.zeros(V, dtype=torch.bool, device=device)
            self.seen[torch.tensor(prompt, device=device).clamp_(max=V - 1)] = True
        if pipe.needs_counts:
            self.counts = torch.zeros(V, dtype=torch.float32, device=device)

    def push(self, tok: int, lp: TokenLogprob | None = None) -> StepOutput:
        """Record a chosen token: update penalty state and text, apply the stopping rules."""
        self.tokens.append(tok)
        if lp is not None and self.logprobs is not None:
            self.logprobs.append(lp)
        if self.seen is not None:
            self.seen[tok] = True
        if self.counts is not None:
            self.counts[tok] += 1
        text = ""
        if tok in self.stop_ids:
            self.finished, self.finish_reason = True, "stop"
        elif self.stream is not None:
            text = self.stream.push(tok)
            if self.stream.stopped:
                self.finished, self.finish_reason = True, "stop"
        if not self.finished and len(self.prompt) + len(self.tokens) >= self.max_total:
            self.finished, self.finish_reason = True, "length"
        if self.finished and self.stream is not None:
            text += self.stream.finish()
        return StepOutput(self.id, tok, text, self.finished, self.finish_reason, lp)

    def completion(self) -> Completion:
        return Completion(
            text=self.stream.text if self.stream else "",
            token_ids=list(self.tokens),
            finish_reason=self.finish_reason or "length",
            prompt_tokens=len(self.prompt),
            logprobs=self.logprobs,
        )


class Engine:
    """Generates from a :class:`~llmkit.model.transformer.Transformer` (and a tokenizer for text).

    ``max_batch`` bounds the sequences decoded together; ``prefill_tokens`` bounds the tokens of
    one prefill forward (longer batches are split), which bounds activation memory.
    ``max_batch_tokens`` bounds rows x longest reserved length (prompt + max_new_tokens, capped at
    the context) of the running batch, and so the KV cache's size; ``prefill_budget`` bounds the
    prompt tokens admitted per :meth:`step` (None: no bound; a request larger than a bound runs
    alone, or first in its step). ``optimize``
    applies :func:`prepare_for_inference` to the model (in place, same values). ``prefix_cache``
    keeps the KV of that many finished sequences for prompts that continue them
    (:mod:`~llmkit.infer.prefix_cache`; off by default, so results never depend on what ran before).
    ``kv_cache`` "int8" stores keys and values in int8 (:class:`~llmkit.infer.kv_cache.Int8KVCache`:
    about a quarter of the fp32 cache's memory, for long contexts and large batches); "auto" in
    the compute dtype.
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        max_batch: int = 32,
        prefill_tokens: int = 8192,
        max_context: int | None = None,
        add_bos: bool = True,
        optimize: bool = True,
        prefix_cache: int = 0,
        max_batch_tokens: int | None = None,
        prefill_budget: int | None = None,
        kv_cache: str = "auto",
    ):
        self.model = model.eval()
        if optimize and hasattr(model, "lm_head"):
            prepare_for_inference(model)
        self.config = model.config
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens
        self.max_batch_tokens = max_batch_tokens
        self.prefill_budget = prefill_budget
        self.context = max_context or context_length(self.config)
        self.add_bos = add_bos
        p = next(model.parameters())
        self.device = p.device
        self.vocab_size = self.config.vocab_size
        self.eos_ids = {self.config.eos_token_id}
        if tokenizer is not None and getattr(tokenizer, "eos_id", None) is not None:
            self.eos_ids.add(tokenizer.eos_id)
        self._table = token_byte_table(tokenizer) if tokenizer is not None else None
        if kv_cache not in KV_CACHE_KINDS:
            raise GenerationError(f"unknown kv_cache {kv_cache!r}; choose one of {', '.join(KV_CACHE_KINDS)}")
        self.kv_cache = kv_cache
        self.cache: KVCache | None = None
        self.prefixes = PrefixCache(prefix_cache)
        self._rows: list[SeqState] = []  # running sequences; cache row i holds self._rows[i]
        self._pending: list[SeqState] = []  # added, not yet prefilled
        self._done: dict[int, SeqState] = {}  # finished, result not yet collected
        self._ids = itertools.count()

    # ------------------------------------------------------------------ text <-> ids
    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        """A prompt as token ids: strings are encoded (with BOS if ``add_bos``); ids pass through."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise GenerationError(
                    "a text prompt needs a tokenizer; pass token ids or load a checkpoint with tokenizer.json"
                )
            ids = self.tokenizer.encode(prompt, bos=self.add_bos) if prompt else []
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise GenerationError("empty prompt: give at least one character (or token id) to continue from")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise GenerationError(f"prompt token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        return ids

    # ------------------------------------------------------------------ the step API
    @torch.inference_mode()
    def add(self, prompt: str | Sequence[int], params: SamplingParams | None = None, seed_offset: int = 0) -> list[int]:
        """Queue a request; it is prefilled at the next :meth:`step`. Returns one sequence id per
        sample (``params.n`` of them). Sample ``i`` uses seed ``params.seed + seed_offset + i``."""
        params = (params or SamplingParams()).validate()
        if params.num_beams > 1:
            raise GenerationError("beam search runs whole requests; use Engine.generate, not the step API")
        ids = self._fit_prompt(self.encode(prompt), params)
        out, leader = [], None
        for i in range(params.n):
            seed = None if params.seed is None else params.seed + seed_offset + i
            s = self.new_sequence(ids, params, seed)
            s.share_from = leader
            leader = leader or s
            self._pending.append(s)
            out.append(s.id)
        return out

    def new_sequence(self, ids: list[int], params: SamplingParams, seed: int | None = None) -> SeqState:
        """A fresh :class:`SeqState` for prompt ``ids`` (already encoded and fitted), not yet
        scheduled; speculative decoding drives one directly."""
        if params.stop and self._table is None:
            raise GenerationError("stop strings need a tokenizer; use stop_token_ids with an ids-only engine")
        stop_ids = set() if params.ignore_eos else set(self.eos_ids)
        stop_ids |= {int(t) for t in params.stop_token_ids}
        pipe = LogitsPipeline(params, self.vocab_size, sorted(stop_ids), self.device)
        max_total = min(self.context, len(ids) + params.max_new_tokens)
        stream = _TextStream(self._table, params.stop) if self._table is not None else None
        return SeqState(next(self._ids), ids, params, pipe, stop_ids, max_total, seed, stream, self.device)

    def fit_prompt(self, prompt: str | Sequence[int], params: SamplingParams) -> list[int]:
        """Encode a prompt and apply the context rules (error, or left-truncation if asked)."""
        return self._fit_prompt(self.encode(prompt), params)

    @torch.inference_mode()
    def step(self) -> list[StepOutput]:
        """Advance every running sequence by one token and prefill every queued one (which yields
        its first token). Finished sequences leave the batch; collect them with :meth:`result`."""
        outs: list[StepOutput] = []
        if self._rows:
            outs += self._decode()
            self._release_finished()  # rows that just finished make room for this step's admissions
        if self._pending:
            take = self._admit(self.max_batch - len(self._rows))
            if take:
                outs += self._prefill(take)
        self._release_finished()
        return outs

    def _admit(self, room: int) -> list[SeqState]:
        """Pop queued requests, whole requests at a time and in order, while they fit in ``room``
        rows, the KV budget and this step's prefill budget. The first request of a step is admitted
        into an empty batch whatever its size, and past the prefill budget into a running one, so
        every request eventually runs."""
        take: list[SeqState] = []
        longest = max((s.max_total for s in self._rows), default=0)
        prefill = 0
        while self._pending:
            size = 1
            while size < len(self._pending) and self._pending[size].share_from is not None:
                size += 1
            lead = self._pending[0]
            rows = len(self._rows) + len(take) + size
            over_rows = len(take) + size > room
            over_kv = self.max_batch_tokens is not None and rows * max(longest, lead.max_total) > self.max_batch_tokens
            over_prefill = self.prefill_budget is not None and prefill + len(lead.prompt) > self.prefill_budget
            busy = bool(take or self._rows)
            if ((over_rows or over_kv) and busy) or (over_prefill and take):
                break
            take += self._pending[:size]
            del self._pending[:size]
            longest = max(longest, lead.max_total)
            prefill += len(lead.prompt)  # samples of a prompt copy its prefill
        return take

    @torch.inference_mode()
    def remove(self, seq_id: int) -> None:
        """Cancel a sequence (running, queued or finished): its cache row is freed at once."""
        self._pending = [s for s in self._pending if s.id != seq_id]
        self._done.pop(seq_id, None)
        for s in self._rows:
            if s.id == seq_id:
                s.finished, s.finish_reason = True, "cancelled"
        self._release_finished(keep=False)

    def result(self, seq_id: int) -> Completion:
        """The completion of a finished sequence (and forget it)."""
        return self._done.pop(seq_id).completion()

    def has_work(self) -> bool:
        return bool(self._rows or self._pending)

    @property
    def num_running(self) -> int:
        """Sequences in the batch (each holds a cache row)."""
        return len(self._rows)

    @property
    def num_waiting(self) -> int:
        """Sequences added but not yet admitted into the batch."""
        return len(self._pending)

    # ------------------------------------------------------------------ whole requests
    def generate(
        self,
        prompts: Sequence[str | Sequence[int]],
        params: SamplingParams | None = None,
    ) -> list[list[Completion]]:
        """Complete every prompt; ``result[i]`` holds the ``params.n`` completions of prompt ``i``.

        Prompts are batched (at most ``max_batch`` sequences at a time, new ones joining as others
        finish); each row's output equals what it would be alone (greedy, or seeded sampling).
        """
        params = (params or SamplingParams()).validate()
        if params.num_beams > 1:
            return [self.beam_search(p, params) for p in prompts]
        if self.has_work():
            raise GenerationError("the engine is busy with step-API sequences; finish or remove them first")
        encoded = [self.encode(p) for p in prompts]  # validate all before doing any work
        ids_per_prompt = [self.add(p, params, seed_offset=i * params.n) for i, p in enumerate(encoded)]
        try:
            while self.has_work():
                self.step()
            return [[self.result(i) for i in ids] for ids in ids_per_prompt]
        finally:
            self._abort_all()

    def stream(self, prompt: str | Sequence[int], params: SamplingParams | None = None) -> Iterator[StepOutput]:
        """Yield one :class:`StepOutput` per generated token of a single sample; closing the
        iterator early (or Ctrl-C) cancels the sequence and frees its cache row."""
        params = (params or SamplingParams()).validate()
        if params.n != 1 or params.num_beams != 1:
            raise GenerationError("stream() produces one sample: use n=1 and num_beams=1")
        if self.has_work():
            raise GenerationError("the engine is busy with step-API sequences; finish or remove them first")
        (sid,) = self.add(prompt, params)
        try:
            while self.has_work():
                for o in self.step():
                    if o.seq_id == sid:
                        yield o
        finally:
            self._abort_all()

    @torch.inference_mode()
    def _abort_all(self) -> None:
        for s in self._rows:
            s.finished = True
        self._release_finished(keep=False)
        self._pending.clear()
        self._done.clear()

    # ------------------------------------------------------------------ internals
    def _fit_prompt(self, ids: list[int], params: SamplingParams) -> list[int]:
        if len(ids) + params.max_new_tokens > self.context and params.truncate_prompt:
            ids = ids[-max(1, self.context - params.max_new_tokens) :]
        if len(ids) >= self.context:
            raise GenerationError(
                f"prompt is {len(ids)} tokens but the model's context is {self.context}; shorten it, or ask "
                "for left-truncation (truncate_prompt=True, --truncate) to keep its last tokens"
            )
        return ids

    def _ensure_cache(self, rows: int, length: int) -> None:
        """Make room for ``rows`` rows of ``length`` slots. The cache only grows, except that with a
        KV budget a growth that would pass it reshapes the cache to exactly what is needed."""
        if self.cache is None:
            self.cache = KVCache.for_model(self.model, max(rows, 1), length, self.kv_cache)
        elif rows > self.cache.max_batch or length > self.cache.max_len:
            B, S = max(rows, self.cache.max_batch), max(length, self.cache.max_len)
            if self.max_batch_tokens is not None and self.max_batch_tokens < B * S:
                B, S = rows, length
            self.cache.resize(B, S)

    def _prefill(self, seqs: list[SeqState]) -> list[StepOutput]:
        """Prefill the leaders of ``seqs`` in right-padded batches; samples of a leader copy its
        cache row; every sequence draws its first token from the prompt's last logits."""
        leaders = [s for s in seqs if s.share_from is None]
        self._ensure_cache(len(self._rows) + len(seqs), max(s.max_total for s in [*self._rows, *seqs]))
        logits_of: dict[int, torch.Tensor] = {}
        fresh = []
        for s in leaders:  # prompts that continue a remembered sequence prefill only the rest
            start = self.prefixes.restore(s.prompt, self.cache, len(self._rows)) if self.prefixes.capacity else 0
            if start:
                logits_of[s.id] = self._prefill_continuation(s, start)
            else:
                fresh.append(s)
        chunk: list[SeqState] = []
        for s in [*fresh, None]:
            if s is None and not chunk:
                break
            if s is not None and (
                not chunk or (len(chunk) + 1) * max(len(c.prompt) for c in [*chunk, s]) <= self.prefill_tokens
            ):
                chunk.append(s)
                continue
            logits = self._prefill_forward(chunk)
            for c, row_logits in zip(chunk, logits, strict=True):
                logits_of[c.id] = row_logits
            chunk = [s] if s is not None else []
        # followers (extra samples of a prompt) copy the leader's cache row
        for s in seqs:
            if s.share_from is not None:
                lead = s.share_from
                self.cache.copy_row(self._rows.index(lead), len(self._rows), len(s.prompt))
                self._rows.append(s)
                s.cache_len = len(s.prompt)
        ordered = [s for s in self._rows if s in seqs]  # row order
        stacked = torch.stack([logits_of[(s.share_from or s).id] for s in ordered])  # (m, V)
        return self._choose(ordered, stacked)

    def _prefill_forward(self, chunk: list[SeqState]) -> torch.Tensor:
        r0, m = len(self._rows), len(chunk)
        lens = [len(s.prompt) for s in chunk]
        T = max(lens)
        ids = torch.full((m, T), self.config.pad_token_id or 0, dtype=torch.long)  # any id: padding is masked
        for i, s in enumerate(chunk):
            ids[i, : lens[i]] = torch.tensor(s.prompt)
        ids = ids.to(self.device)  # (m, T) right-padded
        pos = torch.arange(T, device=self.device).expand(m, T)  # (m, T)
        self.cache.bind(slice(r0, r0 + m), [0] * m, T)
        h = self.model.hidden_states(ids, pos, None, self.cache)  # (m, T, C), causal
        last = torch.tensor(lens, device=self.device) - 1
        h_last = h[torch.arange(m, device=self.device), last]  # (m, C)
        logits = self.model.head(h_last).float()  # (m, V)
        for s in chunk:
            s.cache_len = len(s.prompt)
        self._rows.extend(chunk)
        return logits

    def _prefill_continuation(self, s: SeqState, start: int) -> torch.Tensor:
        """Prefill ``s.prompt[start:]`` into the next cache row, whose slots ``0 .. start-1`` already
        hold the prompt's first ``start`` tokens; returns the last position's logits (V,)."""
        r, P = len(self._rows), len(s.prompt)
        T = P - start
        ids = torch.tensor([s.prompt[start:]], device=self.device)  # (1, T)
        pos = torch.arange(start, P, device=self.device)[None]  # (1, T)
        mask = (torch.arange(P, device=self.device) <= pos[0, :, None])[None, None]  # (1, 1, T, P): causal, offset
        self.cache.bind(slice(r, r + 1), [start], T)
        h = self.model.hidden_states(ids, pos, mask, self.cache)  # (1, T, C)
        s.cache_len = P
        self._rows.append(s)
        return self.model.head(h[0, -1]).float()  # (V,)

    def _decode(self) -> list[StepOutput]:
        seqs = self._rows
        n = len(seqs)
        lens = [s.cache_len for s in seqs]
        ids = torch.tensor([s.tokens[-1] for s in seqs], device=self.device)[:, None]  # (n, 1)
        pos = torch.tensor(lens, device=self.device)[:, None]  # (n, 1)
        self.cache.bind(slice(0, n), lens, 1)
        mask = None
        if any(x != lens[0] for x in lens):
            S = max(lens) + 1
            mask = (torch.arange(S, device=self.device) <= pos)[:, None, None, :]  # (n, 1, 1, S)
        logits = self.model(ids, position_ids=pos, attn_mask=mask, kv_cache=self.cache)[:, -1].float()  # (n, V)
        for s in seqs:
            s.cache_len += 1
        return self._choose(list(seqs), logits)

    def _choose(self, seqs: list[SeqState], logits: torch.Tensor) -> list[StepOutput]:
        """Process logits (n, V) per group of rows sharing params, pick tokens, update sequences."""
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(seqs):
            groups.setdefault(s.pipe.key, []).append(i)
        chosen = torch.empty(len(seqs), dtype=torch.long, device=logits.device)
        for idx in groups.values():
            pipe = seqs[idx[0]].pipe
            sub = logits if len(idx) == len(seqs) else logits[idx]
            group = [seqs[i] for i in idx]
            processed = pipe(
                sub,
                seen=torch.stack([s.seen for s in group]) if pipe.needs_seen else None,
                counts=torch.stack([s.counts for s in group]) if pipe.needs_counts else None,
                token_lists=[s.prompt + s.tokens for s in group] if pipe.needs_tokens else None,
                n_generated=torch.tensor([len(s.tokens) for s in group], device=logits.device)
                if pipe.stop_mask is not None
                else None,
            )
            gens = [s.gen for s in group] if not pipe.p.greedy else None
            toks = sample(processed, pipe.p.greedy, gens)
            if len(idx) == len(seqs):
                chosen = toks
            else:
                chosen[idx] = toks
        toks = chosen.tolist()
        lps: dict[int, TokenLogprob] = {}
        want = [i for i, s in enumerate(seqs) if s.params.logprobs is not None]
        if want:
            logp = F.log_softmax(logits[want], -1)  # (w, V) model distribution
            kmax = max(seqs[i].params.logprobs for i in want)
            top_v, top_i = logp.topk(kmax, -1) if kmax else (None, None)
            chosen_lp = logp.gather(1, chosen[want][:, None])[:, 0].tolist()
            for j, i in enumerate(want):
                k = seqs[i].params.logprobs
                top = list(zip(top_i[j, :k].tolist(), top_v[j, :k].tolist(), strict=True)) if k else []
                lps[i] = TokenLogprob(toks[i], chosen_lp[j], top)
        return [s.push(toks[i], lps.get(i)) for i, s in enumerate(seqs)]

    def _release_finished(self, keep: bool = True) -> None:
        """Drop finished rows, moving the last running row into each hole (rows stay contiguous)."""
        i = 0
        while i < len(self._rows):
            s = self._rows[i]
            if not s.finished:
                i += 1
                continue
            if keep:
                self._done[s.id] = s
            if self.prefixes.capacity:
                self.prefixes.remember((s.prompt + s.tokens)[: s.cache_len], self.cache, i)
            last = self._rows.pop()
            if last is not s:
                self.cache.copy_row(len(self._rows), i, last.cache_len)
                self._rows[i] = last

    # ------------------------------------------------------------------ beam search
    @torch.inference_mode()
    def beam_search(self, prompt: str | Sequence[int], params: SamplingParams) -> list[Completion]:
        """Beam search for one prompt, the algorithm of transformers' ``generate(num_beams=...)``
        (2*num_beams candidates per step, finished hypotheses scored sum_logprob / len**penalty,
        the same early-stopping heuristic), so results match it token for token.

        Returns the ``params.n`` best hypotheses, best first.
        """
        params = params.validate()
        ids = self._fit_prompt(self.encode(prompt), params)
        nb, P = params.num_beams, len(ids)
        max_len = min(self.context, P + params.max_new_tokens)
        stop_ids = (set() if params.ignore_eos else set(self.eos_ids)) | {int(t) for t in params.stop_token_ids}
        pipe = LogitsPipeline(params, self.vocab_size, sorted(stop_ids), self.device)
        cache = KVCache.for_model(self.model, nb, max_len, self.kv_cache)
        dev, V = self.device, self.vocab_size
        keep = max(2, 1 + len(stop_ids)) * nb  # candidates kept per step
        top_mask = torch.arange(keep, device=dev) < nb
        stop_t = torch.tensor(sorted(stop_ids), device=dev, dtype=torch.long)

        # prefill once, then the cache row is copied into every beam
        cache.bind(slice(0, 1), [0], P)
        logits = self.model(torch.tensor([ids], device=dev), kv_cache=cache, last_only=True)[:, -1].float()
        for b in range(1, nb):
            cache.copy_row(0, b, P)
        logits = logits.expand(nb, V)
        running = [list(ids) for _ in range(nb)]  # beams' tokens
        run_scores = torch.zeros(nb, device=dev)
        run_scores[1:] = -1e9
        fin_seqs: list[list[int]] = [[] for _ in range(nb)]
        fin_scores = torch.full((nb,), -1e9, device=dev)
        fin_done = torch.zeros(nb, dtype=torch.bool, device=dev)
        improvable = True
        cur = P
        while True:
            logp = F.log_softmax(logits, -1)  # (nb, V)
            seen = counts = None
            if pipe.needs_seen:
                seen = torch.zeros(nb, V, dtype=torch.bool, device=dev)
                for b, r in enumerate(running):
                    seen[b, r] = True
            if pipe.needs_counts:
                counts = torch.zeros(nb, V, device=dev)
                for b, r in enumerate(running):
                    counts[b].index_add_(
                        0, torch.tensor(r[P:], dtype=torch.long, device=dev), torch.ones(len(r) - P, device=dev)
                    )
            logp = pipe(
                logp, seen=seen, counts=counts, token_lists=running, n_generated=torch.full((nb,), cur - P, device=dev)
            )
            acc = (logp + run_scores[:, None]).reshape(-1)  # (nb * V,)
            top_lp, top_idx = torch.topk(acc, keep)
            beam_of, tok_of = top_idx // V, top_idx % V  # (keep,)
            cand = [running[b] + [t] for b, t in zip(beam_of.tolist(), tok_of.tolist(), strict=True)]
            hits = torch.isin(tok_of, stop_t) | (cur + 1 >= max_len)  # (keep,)
            # running beams for the next step: best non-finished candidates
            run_lp = top_lp + hits.float() * -1e9
            nxt = torch.topk(run_lp, nb)[1]
            running = [cand[i] for i in nxt.tolist()]
            new_scores = run_lp[nxt]
            src_beams = beam_of[nxt]
            # finished hypotheses
            just = hits & top_mask
            cand_scores = top_lp / ((cur + 1 - P) ** params.length_penalty)
            full = bool(fin_done.all()) and params.early_stopping is True
            cand_scores = cand_scores + (-1e9 if full else 0.0) + (0.0 if improvable else -1e9)
            cand_scores = cand_scores + (~just).float() * -1e9
            merged = torch.cat((fin_scores, cand_scores))
            best = torch.topk(merged, nb)[1]
            all_seqs = fin_seqs + cand
            fin_seqs = [all_seqs[i] for i in best.tolist()]
            fin_scores = merged[best]
            fin_done = torch.cat((fin_done, just))[best]
            run_scores = new_scores
            cur += 1
            # the early-stop heuristic of transformers
            if params.early_stopping == "never" and params.length_penalty > 0:
                best_len = max_len - P
            else:
                best_len = cur - P
            best_possible = run_scores[0] / (best_len**params.length_penalty)
            worst = fin_scores.min() if bool(fin_done.all()) else torch.tensor(-1e9)
            improvable = improvable and bool(best_possible > worst)
            go_on = improvable and not (bool(fin_done.all()) and params.early_stopping is True) and not bool(hits.all())
            if not go_on or cur >= max_len:
                break
            # next step: reorder the cache to the surviving beams and feed their last tokens
            if not torch.equal(src_beams, torch.arange(nb, device=dev)):
                cache.reorder(slice(0, nb), src_beams, cur - 1)
            cache.bind(slice(0, nb), [cur - 1] * nb, 1)
            last = torch.tensor([[r[-1]] for r in running], device=dev)
            pos = torch.full((nb, 1), cur - 1, device=dev)
            logits = self.model(last, position_ids=pos, kv_cache=cache)[:, -1].float()
        out = []
        for seq, score in list(zip(fin_seqs, fin_scores.tolist(), strict=True))[: params.n]:
            gen = seq[P:]
            reason = "stop" if gen and gen[-1] in stop_ids else "length"
            text = ""
            if self._table is not None:
                st = _TextStream(self._table, [])
                text = "".join(st.push(t) for t in gen if t not in stop_ids) + st.finish()
            out.append(Completion(text, gen, reason, P, None, score))
        return out


# --------------------------------------------------------------------- chat helpers
_END_OF_TURN = ("<|im_end|>", "<|end|>", "<|eot_id|>", "<|end_of_turn|>", "<end_of_turn>", "<|endofturn|>")


def chat_prompt_ids(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template, ready for the
    assistant's reply (BOS added unless the template already writes it). ``tools``: OpenAI tool
    schemas the template lists for the model (only passed on when given, for templates without tools)."""
    if not messages:
        raise GenerationError("chat needs at least one message")
    extra = {"tools": tools} if tools else {}
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, **extra)
    if getattr(tokenizer, "bos_id", None) is None:  # a template without BOS (Qwen2's ChatML)
        return tokenizer.encode(text)
    return tokenizer.encode(text, bos=not text.startswith(tokenizer.id_to_token(tokenizer.bos_id)))


def chat_stop_ids(tokenizer) -> list[int]:
    """The template's end-of-turn token ids (generation of a reply stops there)."""
    out = []
    for name in _END_OF_TURN:
        tid = tokenizer.token_to_id(name)
        if tid is not None:
            out.append(tid)
    return out
