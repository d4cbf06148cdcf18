"""Keyword retrieval: BM25 (``bm25s``) over terms that work for English and Chinese alike.

Text is NFKC-normalised (full-width letters and digits become ASCII) and lower-cased, then split
into runs of CJK characters and everything else. Other runs give words (letters and digits; a
short English stopword list removed). CJK runs have no spaces, so they are segmented one of two
ways, recorded in the index manifest:

* ``bigram``: every pair of neighbouring characters (``北京大学`` -> 北京 京大 大学), a lone character
  as itself. No dictionary, no model, any domain.
* ``jieba``: jieba's search-mode segmentation (words and the shorter words inside them).

The default is whichever retrieved better on the Chinese question set of
``benchmarks/bench_rag.py`` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path

import numpy as np

from llmkit.errors import ConfigError
from llmkit.rag.language import CJK_RANGES

CHINESE_MODES = ("bigram", "jieba")
DEFAULT_CHINESE = "bigram"

_RUNS = re.compile(rf"[{CJK_RANGES}]+|[^\W_{CJK_RANGES}]+")
_CJK_RUN = re.compile(rf"[{CJK_RANGES}]")


def _stopwords() -> tuple[frozenset, frozenset]:
    """bm25s's English (NLTK's list) and Chinese stopwords, plus single characters too common to
    tell chunks apart."""
    from bm25s.stopwords import STOPWORDS_CHINESE, STOPWORDS_EN_PLUS

    return frozenset(STOPWORDS_EN_PLUS), frozenset(STOPWORDS_CHINESE) | frozenset("的了是在和与及或也都就而之其")


_STOPWORDS, _CJK_STOP = _stopwords()


def analyze(text: str, chinese: str = DEFAULT_CHINESE) -> list[str]:
    """The BM25 terms of ``text``."""
    text = unicodedata.normalize("NFKC", text).lower()
    terms: list[str] = []
    for run in _RUNS.findall(text):
        if _CJK_RUN.match(run):
            terms += _segment(run, chinese)
        elif run not in _STOPWORDS:
            terms.append(run)
    return terms


def _segment(run: str, mode: str) -> list[str]:
    if mode == "bigram":
        terms = [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]
        return [t for t in terms if t not in _CJK_STOP]
    if mode == "jieba":
        return [w for w in _jieba().lcut_for_search(run) if w not in _CJK_STOP]
    raise ConfigError(f"chinese segmentation {mode!r}: use one of {', '.join(CHINESE_MODES)}")


def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading chatter
    return jieba


class BM25Index:
    """BM25 over a list of texts; ``search`` returns row numbers and scores (only rows that share
    at least one term with the query)."""

    def __init__(self, chinese: str = DEFAULT_CHINESE):
        if chinese not in CHINESE_MODES:
            raise ConfigError(f"chinese segmentation {chinese!r}: use one of {', '.join(CHINESE_MODES)}")
        self.chinese = chinese
        self.retriever = None
        self.size = 0

    def build(self, texts: list[str]) -> BM25Index:
        import bm25s

        self.size = len(texts)
        self.retriever = None
        if texts:
            self.retriever = bm25s.BM25()
            self.retriever.index([analyze(t, self.chinese) for t in texts], show_progress=False)
        return self

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)``, best first, at most ``k``."""
        terms = analyze(query, self.chinese)
        if self.retriever is None or not terms:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = self.retriever.get_scores(terms)  # (N,)
        k = min(k, int((scores > 0).sum()))
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]  # score, then row: ties broken the same way every time
        return top.astype(np.int64), scores[top].astype(np.float32)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.retriever is not None:
            self.retriever.save(str(directory), show_progress=False)

    @classmethod
    def load(cls, directory: Path, chinese: str, size: int) -> BM25Index:
        import bm25s

        index = cls(chinese)
        index.size = size
        if size:
            index.retriever = bm25s.BM25.load(str(directory), show_progress=False)
        return index
