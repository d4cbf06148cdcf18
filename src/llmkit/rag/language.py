"""Which script a text is written in, as far as retrieval cares: Chinese, Japanese, Korean, or other.

An embedder's model card (``README.md`` front matter, ``language: en``) says which languages it
was trained on. all-MiniLM-L6-v2, the default, is English-only: on the Chinese question set its
recall@5 is a fraction of BM25's (docs/BENCHMARKS.md), and fusing it in makes hybrid search worse
than BM25 alone. So hybrid search leaves the dense retriever out for a question in a CJK script
its embedder does not declare, and fuses both otherwise.
"""

from __future__ import annotations

import re

CJK_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
"""Han ideographs (with extension A and compatibility forms), kana, hangul syllables."""

_CJK = re.compile(f"[{CJK_RANGES}]")
_KANA = re.compile("[\u3040-\u30ff]")
_HANGUL = re.compile("[\uac00-\ud7af]")
_LETTER = re.compile(r"[^\W\d_]")
CJK_LANGUAGES = ("zh", "ja", "ko")


def script_language(text: str) -> str | None:
    """``zh``, ``ja`` or ``ko`` when at least a third of the letters are CJK; None otherwise."""
    letters = len(_LETTER.findall(text))
    cjk = len(_CJK.findall(text))
    if not letters or cjk * 3 < letters:
        return None
    if _KANA.search(text):
        return "ja"
    if _HANGUL.search(text):
        return "ko"
    return "zh"


def covers(languages: list[str] | None, text: str) -> bool:
    """Whether a model trained on ``languages`` (None: unknown, assume any) can read ``text``."""
    if not languages:
        return True
    lang = script_language(text)
    return lang is None or any(code.split("-")[0] == lang for code in languages)
