"""Decontamination: remove training text that overlaps the evaluation items.

A model that saw a test question during pretraining is not being tested on it. The evaluation
texts (prompts, reference answers) are passed in by the caller (the ``clean`` stage fetches them
from the task suite; the data layer knows nothing about tasks) and indexed as the hashes of their
``n``-token windows (words, or characters for Chinese: :mod:`llmkit.data.clean.tokens`), as
GPT-3 and datatrove do with 13-grams. A training document that contains any indexed window is
contaminated:

* ``mode="document"`` removes the whole document (rule ``decontaminate``);
* ``mode="span"`` cuts out just the overlapping text (every covered token and the characters
  between them) and keeps the rest, when anything is left.

Evaluation texts shorter than ``n`` tokens are indexed whole when they have at least
``min_tokens`` tokens (a short question must still be found), and ignored below that (a
three-word answer would match everywhere); :attr:`ContaminationIndex.ignored` counts them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from llmkit.data.clean.tokens import ngram_hashes, token_hashes, token_spans, tokens


class ContaminationIndex:
    """The n-gram hashes of the evaluation texts."""

    def __init__(self, texts: Iterable[str], n: int = 13, min_tokens: int = 8):
        self.n, self.min_tokens = n, min_tokens
        self.lengths: set[int] = set()  # window lengths in the index (n, and shorter whole texts)
        grams: list[np.ndarray] = []
        self.items = self.ignored = 0
        for text in texts:
            toks = tokens(text)
            if len(toks) < min_tokens:
                self.ignored += 1
                continue
            self.items += 1
            k = min(n, len(toks))
            self.lengths.add(k)
            grams.append(ngram_hashes(toks, k))
        self.hashes = np.unique(np.concatenate(grams)) if grams else np.zeros(0, np.uint64)  # sorted (G,)

    def __len__(self) -> int:
        return int(self.hashes.size)

    def matches(self, toks: list[str]) -> list[tuple[int, int]]:
        """``(first token, last token + 1)`` of every window of ``toks`` found in the index."""
        if not self.hashes.size or not toks:
            return []
        h = token_hashes(toks)
        out = []
        for k in sorted(self.lengths):
            if k > len(toks):
                continue
            grams = ngram_hashes([], k, h)  # (T - k + 1,)
            at = np.minimum(np.searchsorted(self.hashes, grams), self.hashes.size - 1)  # binary search, (T-k+1,)
            hit = self.hashes[at] == grams  # np.isin would re-sort the whole index on every call
            out += [(int(i), int(i) + k) for i in np.nonzero(hit)[0]]
        return sorted(out)


def cut_spans(text: str, windows: list[tuple[int, int]]) -> str:
    """``text`` without the characters covered by the token ``windows`` (merged when they touch)."""
    spans = token_spans(text)
    pieces, pos = [], 0
    merged: list[list[int]] = []
    for a, b in windows:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    for a, b in merged:
        start, end = spans[a][0], spans[b - 1][1]
        pieces.append(text[pos:start])
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)
