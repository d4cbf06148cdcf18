"""Preference pairs as token rows for the reward model and DPO.

A pair becomes a prompt's ids and two answers' ids. A conversational prompt is rendered with the
tokenizer's chat template ready for the assistant's turn (as ``llmkit chat`` prompts the model),
and an answer is the tokens SFT trains for that reply: the assistant's tokens through its
end-of-turn token, where generation stops. A plain-text answer continues its prompt and ends with
EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmkit.data.chat import encode_conversation
from llmkit.data.preference import PreferencePair
from llmkit.infer.engine import chat_prompt_ids
from llmkit.train.sequences import pack_completions


@dataclass
class EncodedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def _chat_rows(tokenizer, messages: list[dict], reply: str) -> tuple[list[int], list[int]]:
    """The conversation with ``reply`` as the assistant's last turn, encoded as SFT encodes it
    (:func:`llmkit.data.chat.encode_conversation`): the ids before the reply, and the reply's ids
    through its end-of-turn token."""
    enc = encode_conversation(tokenizer, [*messages, {"role": "assistant", "content": reply}])
    last = max(i for i, m in enumerate(enc.mask) if m)
    first = last
    while first > 0 and enc.mask[first - 1]:
        first -= 1
    return enc.ids[:first], enc.ids[first : last + 1]


def prompt_ids(tokenizer, pair: PreferencePair) -> list[int]:
    if pair.messages is not None:
        return chat_prompt_ids(tokenizer, pair.messages)
    return tokenizer.encode(pair.prompt, bos=True)


def answer_ids(tokenizer, pair: PreferencePair, answer: str) -> list[int]:
    if pair.messages is not None:
        return _chat_rows(tokenizer, pair.messages, answer)[1]
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
    """Pairs from ``source`` (a path or name, see :func:`llmkit.data.preference.read_pairs`; a list
    of :class:`PreferencePair`; or a (train, held-out) tuple of such lists), split by prompt into
    training and held-out pairs unless already split, encoded. Returns (train, held-out, stats)."""
    from llmkit.data.preference import PairStats, read_pairs
    from llmkit.train.posttrain import hold_out

    stats = PairStats()

    def read(items):
        if isinstance(items, str):
            return read_pairs(items, stats)
        return read_pairs(((p.source or f"pair {i}", p) for i, p in enumerate(items)), stats)

    if isinstance(source, tuple):
        train, val = read(source[0]), read(source[1])
    else:
        train, val = hold_out(read(source), val_fraction, key=lambda p: repr(p.messages or p.prompt), seed=seed)
    return encode_pairs(tokenizer, train, max_len), encode_pairs(tokenizer, val, max_len), stats
