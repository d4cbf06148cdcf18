"""Preference pairs as token rows for the reward model and DPO.

A pair becomes a prompt's ids and two answers' ids. A conversational prompt is rendered with the
tokenizer's chat template ready for the assistant's turn, and an answer is the tokens the template
writes for that reply up to and including its end-of-turn token: exactly what the model produces
when it answers in ``llmkit chat``, and where generation stops. A plain-text answer continues its
prompt and ends with EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmkit.data.preference import PreferencePair
from llmkit.infer.engine import chat_prompt_ids, chat_stop_ids
from llmkit.train.sequences import pack_completions


@dataclass
class EncodedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def reply_ids(tokenizer, messages: list[dict], reply: str) -> list[int]:
    """The ids the chat template writes for the assistant's ``reply`` after ``messages``, through
    its end-of-turn token (or EOS)."""
    head = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": reply}])
    tail = full[len(head) :] if full.startswith(head) else reply
    ids = tokenizer.encode(tail)
    stops = set(chat_stop_ids(tokenizer)) | {tokenizer.eos_id}
    for i, t in enumerate(ids):
        if t in stops:
            return ids[: i + 1]
    return [*ids, tokenizer.eos_id]


def prompt_ids(tokenizer, pair: PreferencePair) -> list[int]:
    if pair.messages is not None:
        return chat_prompt_ids(tokenizer, pair.messages)
    return tokenizer.encode(pair.prompt, bos=True)


def answer_ids(tokenizer, pair: PreferencePair, answer: str) -> list[int]:
    if pair.messages is not None:
        return reply_ids(tokenizer, pair.messages, answer)
    return [*tokenizer.encode(answer), tokenizer.eos_id]


def fit(prompt: list[int], answer: list[int], max_len: int) -> tuple[list[int], list[int]]:
    """Cut a row to ``max_len`` tokens: the prompt loses its oldest tokens first (keeping at least
    one), then the answer its last ones."""
    answer = answer[: max_len - 1]
    keep = max(1, max_len - len(answer))
    return prompt[-keep:], answer


def encode_pairs(tokenizer, pairs: Sequence[PreferencePair], max_len: int) -> list[EncodedPair]:
    out = []
    for pair in pairs:
        p = prompt_ids(tokenizer, pair)
        pc, c = fit(p, answer_ids(tokenizer, pair, pair.chosen), max_len)
        pr, r = fit(p, answer_ids(tokenizer, pair, pair.rejected), max_len)
        keep = min(len(pc), len(pr))  # one prompt for both answers
        out.append(EncodedPair(p[-keep:], c, r))
    return out


def pair_rows(pairs: Sequence[EncodedPair], pad_id: int, device="cpu") -> dict[str, torch.Tensor]:
    """The chosen rows then the rejected rows, packed (see :func:`pack_completions`): 2b rows."""
    prompts = [p.prompt for p in pairs] * 2
    answers = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    return pack_completions(prompts, answers, pad_id, device)


def load_pairs(source, tokenizer, max_len: int, val_fraction: float, seed: int = 0):
    """Pairs from ``source`` (a path or name, see :func:`llmkit.data.preference.read_pairs`, or a
    list of :class:`PreferencePair`), split by prompt into training and held-out pairs, encoded.
    Returns (train, held-out, stats)."""
    from llmkit.data.preference import PairStats, read_pairs
    from llmkit.train.finetune import hold_out

    stats = PairStats()
    if isinstance(source, str):
        pairs = read_pairs(source, stats)
    else:
        pairs = read_pairs(((p.source or f"pair {i}", p) for i, p in enumerate(source)), stats)
    train, val = hold_out(pairs, val_fraction, key=lambda p: repr(p.messages or p.prompt), seed=seed)
    return encode_pairs(tokenizer, train, max_len), encode_pairs(tokenizer, val, max_len), stats
