"""Document quality heuristics in the style of Gopher (Rae et al. 2021) and C4 (Raffel et al. 2020),
made to work for Chinese.

Lengths are counted in tokens (:mod:`llmkit.data.clean.tokens`): a Chinese character is a token, so
a 20-character quatrain is 20 tokens, not one "word". Rules that only make sense for words
(mean word length, the English stop-word rule) look only at the non-Chinese tokens or only at
documents that are only English: a Tang poem has no ``the`` and no spaces and is not dropped for it,
and neither is Chinese text with English words in it. The Chinese ellipsis ``……`` is ordinary
punctuation in dialogue and counts neither as a symbol nor as a truncated line; Chinese numerals
(``三十不豪，四十不富``) are words, not numbers.

Each rule has a name; a document fails on the first rule it breaks, and that name is what the
cleaning report counts. :func:`strip_boilerplate` removes navigation/legal lines (C4's line
filter, with Chinese equivalents) before the document rules see the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmkit.data.clean.tokens import words

STOP_WORDS = frozenset(("the", "be", "to", "of", "and", "that", "have", "with"))
_BULLETS = tuple(f"{b} " for b in "•●○◦▪▫‣⁃∙·*-–—")
_SYMBOL = re.compile(r"#|\.{3,}|(?<!…)…(?!…)|⋯")  # Gopher's symbols: hashes and ellipses
_BOILERPLATE = re.compile(
    r"cookies?\b.*\b(use|accept|policy|settings)|\bjavascript\b.*\b(enable|disabled|required)|"
    r"privacy policy|terms (of|and conditions of) (use|service)|all rights reserved|"
    r"\bclick here\b|subscribe to (our|the) newsletter|\b(sign up|log in|sign in)\b.*\|"
    r"|版权所有|隐私政策|用户协议|免责声明|点击(这里|此处)|扫码关注|ICP备|上一篇|下一篇",
    re.I,
)
_MAX_BOILERPLATE_LINE = 200  # longer lines are prose that mentions these words, not boilerplate


@dataclass(frozen=True)
class QualityThresholds:
    """The rule thresholds (``clean.*`` fields set them; see CleanConfig)."""

    min_tokens: int = 4
    max_tokens: int = 500_000
    min_mean_word_length: float = 2.5
    max_mean_word_length: float = 10.0
    max_symbol_ratio: float = 0.1
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_tokens: float = 0.7
    min_stop_words: int = 2
    max_replacement_chars: float = 0.01


def _truncated(line: str) -> bool:
    """A line cut off with an ellipsis (``Read more...``); Chinese ``……`` is punctuation."""
    line = line.rstrip()
    return line.endswith(("...", "…", "⋯")) and not line.endswith("……")


def strip_boilerplate(text: str) -> tuple[str, int]:
    """``(text without boilerplate lines, number of lines removed)``."""
    if not _BOILERPLATE.search(text):
        return text, 0
    lines = text.split("\n")
    kept = [ln for ln in lines if len(ln) > _MAX_BOILERPLATE_LINE or not _BOILERPLATE.search(ln)]
    return "\n".join(kept).strip("\n"), len(lines) - len(kept)


def check(text: str, toks: list[str], langs: list[str], t: QualityThresholds) -> tuple[str, float] | None:
    """``(rule, measured value)`` of the first rule the document breaks, or None if it passes.
    ``toks`` are the document's tokens, ``langs`` its languages (:func:`..langid.identify`)."""
    n = len(toks)
    if n < t.min_tokens:
        return "too_short", n
    if n > t.max_tokens:
        return "too_long", n
    bad = text.count("\ufffd")
    if bad > t.max_replacement_chars * len(text):
        return "broken_encoding", bad / len(text)
    alpha_words = words(text)
    if len(alpha_words) >= 10 and len(alpha_words) >= n / 2:
        mean = sum(map(len, alpha_words)) / len(alpha_words)
        if not t.min_mean_word_length <= mean <= t.max_mean_word_length:
            return "mean_word_length", mean
    symbols = len(_SYMBOL.findall(text))
    if symbols >= 3 and symbols > t.max_symbol_ratio * n:
        return "symbol_ratio", symbols / n
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if len(lines) >= 3:
        bullets = sum(1 for ln in lines if ln.lstrip().startswith(_BULLETS)) / len(lines)
        if bullets > t.max_bullet_lines:
            return "bullet_lines", bullets
        ellipsis = sum(map(_truncated, lines)) / len(lines)
        if ellipsis > t.max_ellipsis_lines:
            return "ellipsis_lines", ellipsis
    alpha = 1 - sum(map(str.isdecimal, alpha_words)) / n
    if alpha < t.min_alpha_tokens:
        return "alpha_tokens", alpha
    if "lorem ipsum" in text.lower():
        return "lorem_ipsum", 1.0
    if langs == ["en"]:
        found = len(STOP_WORDS.intersection(toks))
        if found < t.min_stop_words:
            return "stop_words", found
    return None
