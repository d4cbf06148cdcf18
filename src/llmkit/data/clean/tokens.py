"""Words for alphabetic scripts, single characters for Chinese and Japanese: the unit every
cleaning rule counts in.

Chinese has no spaces, so a "word" rule applied to it sees one enormous word per sentence. Here a
Han, Hiragana or Katakana character is a token of its own and any other run of letters, digits and
marks (with inner apostrophes: ``o'er``, ``'Tis`` -> ``tis``) is one token. Lengths, n-grams,
shingles and decontamination all use these tokens, so one threshold means the same thing for
``床前明月光`` (5 tokens) and ``To be or not to`` (5 tokens).

N-gram hashes are stable across processes and machines (blake2b of each token, combined with a
polynomial in uint64), unlike Python's salted ``hash()``: workers on different machines agree.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import regex

_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
_WORD = rf"[[\p{{L}}\p{{N}}\p{{M}}]--[{_CJK}]]+(?:['’][[\p{{L}}\p{{N}}\p{{M}}]--[{_CJK}]]+)*"
TOKEN_RE = regex.compile(rf"[{_CJK}]|{_WORD}", regex.V1)
WORD_RE = regex.compile(_WORD, regex.V1)
CJK_RE = regex.compile(rf"[{_CJK}]")
HAN_RE = regex.compile(r"\p{Han}")
KANA_RE = regex.compile(r"[\p{Hiragana}\p{Katakana}]")
LETTER_RE = regex.compile(r"\p{L}")
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio) for the polynomial


def tokens(text: str) -> list[str]:
    """The case-folded tokens of ``text`` (punctuation and spaces are not tokens)."""
    return [t.casefold() for t in TOKEN_RE.findall(text)]


def token_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of each token, in order (for cutting spans out)."""
    return [m.span() for m in TOKEN_RE.finditer(text)]


def words(text: str) -> list[str]:
    """The tokens that are not Chinese/Japanese characters (words of alphabetic scripts, numbers)."""
    return WORD_RE.findall(text)


def count_cjk(text: str) -> int:
    """How many tokens of ``text`` are Chinese/Japanese characters (each one is a token)."""
    return len(CJK_RE.findall(text))


@lru_cache(maxsize=1 << 18)
def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


def token_hashes(toks: list[str]) -> np.ndarray:
    """A stable 64-bit hash per token. ``(len(toks),) uint64``"""
    return np.fromiter((_token_hash(t) for t in toks), dtype=np.uint64, count=len(toks))


def ngram_hashes(toks: list[str], n: int, hashes: np.ndarray | None = None) -> np.ndarray:
    """Stable 64-bit hashes of every ``n``-token window, in order; a text shorter than ``n`` tokens
    gives one hash of all its tokens (so short documents still have a shingle).
    ``(max(1, len(toks) - n + 1),) uint64``, or ``(0,)`` for no tokens."""
    h = token_hashes(toks) if hashes is None else hashes  # (T,)
    if h.size == 0:
        return h
    n = min(n, h.size)
    m = h.size - n + 1
    acc = h[:m].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            acc = acc * _MULT + h[k : k + m]  # wraps mod 2**64: a polynomial hash of the window
    return acc  # (T - n + 1,)
