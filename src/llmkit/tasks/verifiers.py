"""Verifiers: read the final answer out of a reply and check it.

Every reference solution ends in a final-answer line (``Answer: 82`` / ``答案：82``). A reply is
checked the same way whatever language it is in: :func:`extract_answer` takes the text after the
last answer marker of either language (or, with no marker, the last non-empty line), and a named
verifier compares it with the example's canonical answer. Verifiers are looked up by name, so a
user's JSONL task names one (``"verifier": "number"``) and needs no code.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmkit.tasks.base import Example

ANSWER_MARKERS = ("final answer:", "answer:", "最终答案：", "最终答案:", "答案：", "答案:", "答：")
"""Markers that introduce the final answer (matched case-insensitively; the last one wins)."""

_EDGE_PUNCT = " \t\"'“”‘’「」『』`.,;:!?。，；：！？、"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def extract_answer(response: str) -> str:
    """The final answer of a reply: the rest of the line after the last answer marker, or the last
    non-empty line when the reply has no marker."""
    text = response.strip()
    low = text.lower()
    best, end = -1, 0
    for marker in ANSWER_MARKERS:
        i = low.rfind(marker)
        if i > best:
            best, end = i, i + len(marker)
    if best >= 0:
        rest = text[end:].strip()
        return rest.splitlines()[0].strip() if rest else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def normalize(text: str) -> str:
    """Case-folded, NFKC (full-width -> ASCII), inner whitespace collapsed, edge punctuation and
    quotes dropped: ``“Apple.”`` and ``apple`` compare equal."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.split()).strip(_EDGE_PUNCT)


def parse_number(text: str) -> float | None:
    """The last number in ``text`` (``1,234`` and ``-5.5`` included), or None."""
    found = _NUMBER.findall(unicodedata.normalize("NFKC", text))
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def cjk_fraction(text: str) -> float:
    """Share of CJK ideographs among the letters of ``text`` (0 for pure English)."""
    letters = [c for c in text if c.isalpha()]
    return sum(1 for c in letters if _CJK.match(c)) / len(letters) if letters else 0.0


# ---------------------------------------------------------------------------------- verifiers
def exact(example: Example, response: str) -> bool:
    """The final answer equals the reference after :func:`normalize`."""
    return normalize(extract_answer(response)) == normalize(example.answer)


def exact_case(example: Example, response: str) -> bool:
    """Like :func:`exact` but letter case must match (upper-case instructions)."""
    got = " ".join(unicodedata.normalize("NFKC", extract_answer(response)).split()).strip(_EDGE_PUNCT)
    return got == " ".join(example.answer.split()).strip(_EDGE_PUNCT)


def number(example: Example, response: str) -> bool:
    """The last number of the final answer equals the reference number."""
    got, want = parse_number(extract_answer(response)), parse_number(example.answer)
    return got is not None and want is not None and abs(got - want) < 1e-9


def contains_all(example: Example, response: str) -> bool:
    """Every part of the reference (``meta["parts"]``, e.g. author and title) is in the final answer."""
    got = normalize(extract_answer(response)).replace("《", "").replace("》", "")
    parts = example.meta.get("parts") or [example.answer]
    return all(normalize(p).replace("《", "").replace("》", "") in got for p in parts)


def json_object(example: Example, response: str) -> bool:
    """The reply holds a JSON object equal to ``meta["expected"]`` (the reference answer's JSON)."""
    want = example.meta.get("expected")
    if want is None:
        want = json.loads(example.answer)
    text = response.strip()
    start = text.find("{")
    while start >= 0:
        try:
            got, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
            continue
        return got == want
    return False


def max_words(example: Example, response: str) -> bool:
    """:func:`exact`, and the answer has at most ``meta["max_words"]`` words (characters for Chinese)."""
    got = extract_answer(response)
    limit = int(example.meta["max_words"])
    size = len(_CJK.findall(got)) if cjk_fraction(got) > 0.5 else len(got.split())
    return size <= limit and normalize(got) == normalize(example.answer)


def choice(example: Example, response: str) -> bool:
    """Multiple choice: the final answer is the reference letter, or the text of that choice."""
    got = normalize(extract_answer(response))
    want = normalize(example.answer)
    if got == want or (got[:1] == want and (len(got) == 1 or not got[1].isalnum())):
        return True
    letters = "abcdefghijklmnopqrstuvwxyz"
    if example.choices and want in letters[: len(example.choices)]:
        return got == normalize(example.choices[letters.index(want)])
    return False


VERIFIERS: dict[str, Callable[[Example, str], bool]] = {
    "exact": exact,
    "exact_case": exact_case,
    "number": number,
    "contains_all": contains_all,
    "json": json_object,
    "max_words": max_words,
    "choice": choice,
}
"""Verifiers by name (what a JSONL task's ``verifier`` field may say)."""
