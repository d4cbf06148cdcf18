"""Bits per byte and perplexity of text, with a sliding window for documents longer than the context.

Bits per byte is the headline: nats summed over a text's tokens divided by ``ln 2`` times the text's
UTF-8 length does not depend on the tokenizer, so models with different vocabularies compare.
Every token of a document is predicted exactly once; a document longer than the window is cut into
windows whose continuations are disjoint, each seeing as much of the text before it as the model's
context allows (``stride`` tokens are scored per window after the first). The windows are plain
(context, continuation) requests to :func:`llmkit.infer.scoring.score`, the one scorer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmkit.errors import LLMKitError
from llmkit.infer.scoring import score


class EvalError(LLMKitError):
    """An evaluation input (task file, text source, option) is missing, malformed or impossible."""


@dataclass
class TextScore:
    """Summed negative log-likelihood of some documents and what it was spread over."""

    nats: float
    tokens: int
    bytes: int
    documents: int

    @property
    def loss(self) -> float:
        """Nats per token."""
        return self.nats / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        """exp(nats per token): depends on the tokenizer, unlike :attr:`bits_per_byte`."""
        return math.exp(self.loss)

    @property
    def bits_per_byte(self) -> float:
        return self.nats / (math.log(2) * max(self.bytes, 1))

    def to_dict(self) -> dict:
        return {
            "bits_per_byte": self.bits_per_byte,
            "loss": self.loss,
            "perplexity": self.perplexity,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "documents": self.documents,
        }


def rolling_requests(
    ids: Sequence[int], prefix: Sequence[int], window: int, stride: int
) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) requests that predict every id of ``ids`` once, after ``prefix``.

    The first request scores the first ``window`` ids after ``prefix``; each later one scores the
    next ``stride`` ids with all the text before them as context (the scorer keeps the last
    ``max_len + 1 - stride`` ids of it). So a text that fits the model's context is scored exactly as
    one full-context pass, whatever ``window`` and ``stride`` are.
    """
    if not prefix:
        raise EvalError("rolling log-likelihood needs a prefix token (BOS or EOS) to predict the first token")
    if window <= 0 or not 0 < stride <= window:
        raise EvalError(f"window={window}, stride={stride}: need 0 < stride <= window")
    ids, prefix = list(ids), list(prefix)
    out = []
    if ids:
        out.append((prefix, ids[:window]))
    for pos in range(window, len(ids), stride):
        out.append((prefix + ids[:pos], ids[pos : pos + stride]))
    return out


def score_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 16,
) -> TextScore:
    """Bits per byte / perplexity of ``texts`` (each scored on its own, after BOS).

    ``window`` defaults to the model's context, ``stride`` to half of it (every token after the first
    window then sees at least half a context of text before it).
    """
    max_len = model.config.max_position_embeddings
    window = min(window or max_len, max_len)
    stride = stride or max(window // 2, 1)
    prefix = [tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id]
    texts = [t for t in texts if t]
    if not texts:
        raise EvalError("no text to score: every document is empty")
    requests, n_tokens, n_bytes = [], 0, 0
    for text, ids in zip(texts, tokenizer.encode_batch(list(texts)), strict=True):
        requests += rolling_requests(ids, prefix, window, stride)
        n_tokens += len(ids)
        n_bytes += len(text.encode("utf-8"))
    scored = score(model, requests, batch_size=batch_size, max_len=max_len)
    nats = -sum(s.logprob for s in scored)
    return TextScore(nats=nats, tokens=n_tokens, bytes=n_bytes, documents=len(texts))
