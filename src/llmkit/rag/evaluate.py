"""How well an index finds what a question needs: recall@k and MRR, with standard errors.

A question set is JSONL, one ``{"question": ..., "answer": ..., "source": ...}`` per line: a
retrieved chunk is relevant when it contains ``answer`` (whitespace-insensitive) and, if
``source`` is given, comes from that file. Users write their own; :func:`generate_questions` makes
one from the indexed documents themselves: it takes a sentence of a random chunk, keeps a random
half of its words (of its characters, in Chinese) in order, and asks for the chunk holding that
sentence. Those questions share words with the answer but never all of them, so they test
keyword and semantic retrieval alike without a model to write questions.

recall@k is the fraction of questions with a relevant chunk among the first k; MRR the mean of
1/rank of the first relevant chunk (0 when none is in the first ``max(ks)``).
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

from llmkit.errors import DataError
from llmkit.rag.chunking import SENTENCE_END, Chunk
from llmkit.rag.language import CJK_RANGES

DEFAULT_KS = (1, 3, 5, 10)


@dataclass
class Question:
    question: str
    answer: str | None = None
    source: str | None = None
    lang: str | None = None


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def is_relevant(chunk: Chunk, q: Question) -> bool:
    if q.source is not None and q.source not in (chunk.source, chunk.source.split("#", 1)[0]):
        return False
    return q.answer is None or _norm(q.answer) in _norm(chunk.text)


def read_questions(path: Path) -> list[Question]:
    """A question set from JSONL; each bad line is reported with its number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such question file; write JSONL lines of {{'question', 'answer', 'source'}}")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) or not rec["question"].strip():
            raise DataError(f"{path}:{lineno}: needs a non-empty string field 'question'")
        if rec.get("answer") is None and rec.get("source") is None:
            raise DataError(f"{path}:{lineno}: give 'answer' (text the right chunk contains) or 'source' (its file)")
        out.append(Question(rec["question"], rec.get("answer"), rec.get("source"), rec.get("lang")))
    if not out:
        raise DataError(f"{path}: no questions in the file")
    return out


def write_questions(path: Path, questions: list[Question]) -> None:
    from llmkit.checkpoint import atomic_write_text

    lines = [json.dumps({k: v for k, v in q.__dict__.items() if v is not None}, ensure_ascii=False) for q in questions]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


_CJK_CHAR = re.compile(f"[{CJK_RANGES}]")


def generate_questions(chunks: list[Chunk], n: int, seed: int = 0, keep: float = 0.5) -> list[Question]:
    """``n`` questions made from sentences of ``chunks`` (see module doc); deterministic per seed."""
    rng = random.Random(seed)
    order = list(range(len(chunks)))
    rng.shuffle(order)
    out: list[Question] = []
    seen: set[str] = set()
    for i in order:
        if len(out) >= n:
            break
        chunk = chunks[i]
        sentences = [s.strip() for s in SENTENCE_END.split(chunk.text) if s and s.strip()]
        sentences = [s for s in sentences if not s.startswith("#") and s not in seen]
        candidates = [s for s in sentences if _long_enough(s)]
        if not candidates:
            continue
        sentence = rng.choice(candidates)
        zh = len(_CJK_CHAR.findall(sentence)) > len(sentence) / 3
        pieces = [c for c in sentence if not c.isspace()] if zh else sentence.split()
        pieces = [p for p in pieces if re.search(r"\w", p)]
        chosen = sorted(rng.sample(range(len(pieces)), max(2, round(len(pieces) * keep))))
        question = ("" if zh else " ").join(pieces[j] for j in chosen)
        seen.add(sentence)
        out.append(Question(question, sentence, chunk.source.split("#", 1)[0], "zh" if zh else "en"))
    return out


def _long_enough(sentence: str) -> bool:
    cjk = len(_CJK_CHAR.findall(sentence))
    return cjk >= 10 if cjk > len(sentence) / 3 else len(sentence.split()) >= 8


@dataclass
class Metric:
    value: float
    se: float

    def __str__(self) -> str:
        return f"{self.value:.3f} ± {self.se:.3f}"


def evaluate(index, questions: list[Question], modes: list[str], ks=DEFAULT_KS, reranker=None) -> dict:
    """``{mode: {"recall@k": Metric, ..., "mrr": Metric, "n": int}}`` for each search mode."""
    if not questions:
        raise DataError("no questions to evaluate with")
    depth = max(ks)
    results = {}
    for mode in modes:
        first: list[int | None] = []
        for q in questions:
            hits = index.search(q.question, k=depth, mode=mode, reranker=reranker)
            first.append(next((r for r, h in enumerate(hits, 1) if is_relevant(h.chunk, q)), None))
        n = len(first)
        row: dict = {}
        for k in ks:
            p = sum(1 for r in first if r is not None and r <= k) / n
            row[f"recall@{k}"] = Metric(p, math.sqrt(p * (1 - p) / n))
        rr = [1.0 / r if r is not None else 0.0 for r in first]
        mean = sum(rr) / n
        var = sum((x - mean) ** 2 for x in rr) / max(n - 1, 1)
        row["mrr"] = Metric(mean, math.sqrt(var / n))
        row["n"] = n
        results[mode] = row
    return results


def format_table(results: dict) -> str:
    """A markdown table: one row per mode."""
    recalls = [key for key in next(iter(results.values())) if key.startswith("recall@")]
    depth = recalls[-1].split("@")[1]
    head = ["mode", *recalls, f"MRR@{depth}", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, row in results.items():
        cells = [mode, *(str(row[key]) for key in recalls), str(row["mrr"]), str(row["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
