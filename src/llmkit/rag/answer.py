"""Grounded answers: retrieve, number the passages into the prompt, let the chat model answer
with citations, and hand back the sources (file and position) with the reply.

The prompt is the task suite's grounded format (:mod:`llmkit.tasks.grounded`), so a model
fine-tuned on ``rag_cite`` knows to answer ``Answer: ... [n]``. Passages are added best first
while they fit the model's context (leaving room for the answer); the last one is cut to fit.
When nothing is retrieved the prompt says so and the model is expected to answer "not in the
sources".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmkit.errors import DataError
from llmkit.rag.language import script_language
from llmkit.tasks.grounded import cited, grounded_prompt


@dataclass
class GroundedAnswer:
    reply: str
    sources: list = field(default_factory=list)
    """The hits shown to the model, in prompt order: ``[n]`` in the reply is ``sources[n - 1]``."""

    @property
    def citations(self) -> list[int]:
        return [n for n in cited(self.reply) if 1 <= n <= len(self.sources)]

    def sources_json(self) -> list[dict]:
        return sources_json(self.sources)


def sources_json(hits: list) -> list[dict]:
    """The hits as ``[n]`` -> file, position, score and text (what the API and ``--json`` return)."""
    return [
        {"n": i, "source": h.chunk.source, "where": h.chunk.where, "line": h.chunk.line, "page": h.chunk.page,
         "score": h.score, "text": h.chunk.text}
        for i, h in enumerate(hits, 1)
    ]  # fmt: skip


def grounded_messages(index, question: str, tokenizer, budget: int, k: int = 3, system: str | None = None):
    """(messages, hits): the user turn with as many of the ``k`` best passages as fit ``budget``
    prompt tokens. A question that does not fit even alone is a one-line error."""
    from llmkit.infer.engine import chat_prompt_ids

    lang = "zh" if script_language(question) == "zh" else "en"
    head = [{"role": "system", "content": system}] if system else []

    def size(sources: list[str]) -> int:
        msg = {"role": "user", "content": grounded_prompt(question, sources, lang)}
        return len(chat_prompt_ids(tokenizer, [*head, msg]))

    alone = size([])
    if alone > budget:
        raise DataError(
            f"the question is {alone} tokens with the prompt around it, but the model reads {budget} "
            "(its context minus room for the answer); shorten the question or lower --max-new-tokens"
        )
    hits = index.search(question, k=k, mode=index.modes[0])
    texts: list[str] = []
    kept = []
    for h in hits:
        text = " ".join(h.chunk.text.split())
        if size([*texts, text]) > budget:
            lo, hi = 0, len(text)  # the longest prefix that still fits
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if size([*texts, text[:mid] + " ..."]) <= budget else (lo, mid - 1)
            if lo < 20:
                break
            text = text[:lo] + " ..."
        texts.append(text)
        kept.append(h)
        if size(texts) >= budget:
            break
    return [*head, {"role": "user", "content": grounded_prompt(question, texts, lang)}], kept


def ask(lm, index, question: str, params, k: int = 3, system: str | None = None) -> GroundedAnswer:
    """Retrieve, prompt and answer with a loaded chat model (``llmkit.load``)."""
    from llmkit.infer.engine import chat_prompt_ids, chat_stop_ids

    budget = lm.engine.context - params.max_new_tokens
    messages, hits = grounded_messages(index, question, lm.tokenizer, budget, k, system)
    ids = chat_prompt_ids(lm.tokenizer, messages)
    params = params.with_(stop_token_ids=[*params.stop_token_ids, *chat_stop_ids(lm.tokenizer)])
    reply = lm.engine.generate([ids], params)[0][0].text
    return GroundedAnswer(reply.strip(), hits)
