"""Log-likelihood of continuations: the one scorer of given text (not generated text).

Multiple-choice evaluation, ``lm-eval``'s ``loglikelihood`` requests, the server's ``echo`` +
``logprobs`` and preference pairs all ask the same question: given context ids, how likely are these
continuation ids, token by token, and is each the model's greedy choice? Requests are sorted by
length and run in right-padded batches (causal attention never looks at the padding on the right),
then returned in the order given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmkit.infer.sampling import GenerationError


@dataclass
class Scored:
    """The continuation's tokens: log-probability of each, whether each was the argmax, and (when
    asked) the ``top_k`` most likely (id, log-probability) pairs at each position."""

    token_logprobs: list[float]
    greedy: list[bool]
    top: list[list[tuple[int, float]]] | None = None

    @property
    def logprob(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def is_greedy(self) -> bool:
        return all(self.greedy)


def _fit(context: list[int], continuation: list[int], max_len: int) -> tuple[list[int], int]:
    """Context + continuation as one row of at most ``max_len + 1`` ids (the context cut on the left,
    as lm-eval does), and how many of its last ids are the continuation."""
    if not continuation:
        raise GenerationError("nothing to score: the continuation is empty")
    if len(continuation) > max_len:
        raise GenerationError(
            f"a continuation of {len(continuation)} tokens does not fit the model's context of {max_len}"
        )
    if not context:
        raise GenerationError("scoring needs at least one context token (for example BOS) before the continuation")
    ids = (context + continuation)[-(max_len + 1) :]
    return ids, len(continuation)


@torch.inference_mode()
def score(
    model,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    batch_size: int = 16,
    top_k: int = 0,
    max_len: int | None = None,
) -> list[Scored]:
    """Score each ``(context_ids, continuation_ids)``; see :class:`Scored`. ``max_len`` defaults to
    the model's ``max_position_embeddings``."""
    max_len = max_len or model.config.max_position_embeddings
    rows = [_fit([int(t) for t in c], [int(t) for t in x], max_len) for c, x in requests]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    device = next(model.parameters()).device
    out: list[Scored | None] = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = len(rows[chunk[0]][0]) - 1  # longest row first: inputs drop the last id
        inputs = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
        for r, i in enumerate(chunk):
            ids = rows[i][0][:-1]
            inputs[r, : len(ids)] = torch.tensor(ids, device=device)
        logprobs = torch.log_softmax(model(inputs).float(), dim=-1)  # (B, T, V)
        for r, i in enumerate(chunk):
            ids, n = rows[i]
            T = len(ids) - 1
            lp = logprobs[r, T - n : T]  # (n, V): the positions that predict the continuation
            target = torch.tensor(ids[-n:], device=device)  # (n,)
            picked = lp.gather(-1, target[:, None])[:, 0]  # (n,)
            greedy = lp.argmax(-1) == target  # (n,)
            top = None
            if top_k:
                values, indices = lp.topk(min(top_k, lp.shape[-1]), dim=-1)  # (n, k) each
                top = [list(zip(ix, vx, strict=True)) for ix, vx in zip(indices.tolist(), values.tolist(), strict=True)]
            out[i] = Scored(picked.tolist(), greedy.tolist(), top)
    return out  # type: ignore[return-value]


def bits_per_byte(model, tokenizer, texts: Sequence[str], max_tokens: int = 0, batch_size: int = 16) -> float:
    """Bits per UTF-8 byte of ``texts`` under ``model``: the documents joined with EOS, cut into
    windows of the model's context, each scored after one BOS/EOS token (at most ``max_tokens``
    scored tokens, 0 = all). Comparable across models that share a tokenizer, e.g. a model and its
    quantized copy."""
    sep = tokenizer.eos_id if tokenizer.eos_id is not None else 0
    start = tokenizer.bos_id if tokenizer.bos_id is not None else sep
    ids: list[int] = []
    for text in texts:
        ids += [*tokenizer.encode(text), sep]
        if max_tokens and len(ids) >= max_tokens:
            break
    ids = ids[:max_tokens] if max_tokens else ids
    width = model.config.max_position_embeddings - 1
    windows = [ids[i : i + width] for i in range(0, len(ids), width)]
    scored = score(model, [([start], w) for w in windows], batch_size=batch_size)
    nats = -sum(s.logprob for s in scored)
    nbytes = int(tokenizer.token_bytes()[torch.tensor(ids)].sum())
    return nats / math.log(2) / max(nbytes, 1)
