"""Repetition inside a document (Gopher's repetition rules): repeated lines, paragraphs and n-grams.

Spam, scraped navigation and degenerate generated text repeat themselves; real prose and verse
repeat far less. Fractions are of characters (or of lines/paragraphs), counted over tokens from
:mod:`llmkit.data.clean.tokens`, so Chinese is measured in characters. Because a Chinese character
carries about half the information of an English word, n-gram rules on a mostly-Chinese document
use n-grams twice as long (a 2-word phrase ~ a 4-character phrase).

The rules apply to documents of at least ``MIN_TOKENS`` tokens. Refrains are the heart of songs and
short poems (the Book of Songs repeats whole lines in every stanza: ``知我者，謂我心憂`` three times in
124 characters, 67% of its 10-character n-grams repeated), and a short text has too few n-grams for
a fraction to mean anything; spam and degenerate text are long. Line rules ignore short lines
(speaker names in a play, ``HAMLET.``, repeat by nature) and lines without letters (the borders of
a text table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmkit.data.clean.tokens import LETTER_RE, count_cjk, ngram_hashes, token_hashes

MIN_TOKENS = 300
_SHORT_LINE_CHARS = 30  # lines this short are headings, speaker names, stage directions


@dataclass(frozen=True)
class RepetitionThresholds:
    max_dup_line_chars: float = 0.2
    max_dup_para_chars: float = 0.2
    top_ngram: tuple = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_ngram: tuple = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


def _dup_chars(parts: list[str]) -> float:
    """Fraction of the parts' characters that repeat an earlier part."""
    seen: set[str] = set()
    dup = total = 0
    for p in parts:
        total += len(p)
        if p in seen:
            dup += len(p)
        seen.add(p)
    return dup / total if total else 0.0


def _top_ngram_share(hashes: np.ndarray, lengths: np.ndarray, n: int, total: int) -> float:
    """Share of token characters covered by the most frequent n-gram (counted once per occurrence)."""
    grams = ngram_hashes([], n, hashes)
    if grams.size == 0:
        return 0.0
    values, counts = np.unique(grams, return_counts=True)
    top = int(np.argmax(counts))
    if counts[top] < 2:
        return 0.0
    first = int(np.nonzero(grams == values[top])[0][0])
    return float(counts[top] * lengths[first : first + n].sum() / total)


def _dup_ngram_share(hashes: np.ndarray, lengths: np.ndarray, n: int, total: int) -> float:
    """Share of token characters inside n-grams that occur more than once."""
    grams = ngram_hashes([], n, hashes)
    _, inverse, counts = np.unique(grams, return_inverse=True, return_counts=True)
    repeated = counts[inverse] > 1  # (T - n + 1,) windows that repeat
    if not repeated.any():
        return 0.0
    mask = np.convolve(repeated, np.ones(n, dtype=bool))[: hashes.size]  # (T,) tokens inside a repeated window
    return float(lengths[mask].sum() / total)


def check(text: str, toks: list[str], t: RepetitionThresholds) -> tuple[str, float] | None:
    """``(rule, measured value)`` of the first repetition rule the document breaks, or None."""
    if len(toks) < MIN_TOKENS:
        return None
    lines = [ln.strip() for ln in text.split("\n") if len(ln.strip()) > _SHORT_LINE_CHARS and LETTER_RE.search(ln)]
    if len(lines) >= 3:
        v = _dup_chars(lines)
        if v > t.max_dup_line_chars:
            return "dup_lines", v
    paras = [p.strip() for p in text.split("\n\n") if len(p.strip()) > _SHORT_LINE_CHARS]
    if len(paras) >= 3:
        v = _dup_chars(paras)
        if v > t.max_dup_para_chars:
            return "dup_paragraphs", v
    scale = 2 if count_cjk(text) > 0.5 * len(toks) else 1
    hashes = token_hashes(toks)
    lengths = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
    total = int(lengths.sum())
    for n, limit in t.top_ngram:
        v = _top_ngram_share(hashes, lengths, n * scale, total)
        if v > limit:
            return f"top_{n}gram", v
    for n, limit in t.dup_ngram:
        v = _dup_ngram_share(hashes, lengths, n * scale, total)
        if v > limit:
            return f"dup_{n}gram", v
    return None
