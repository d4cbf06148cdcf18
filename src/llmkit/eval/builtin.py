"""Generators behind the built-in task files: tasks where context can teach the answer (pattern
copying, a label mapping shown only in the prompt) and tasks made from held-out corpus text.

Each generator is a pure function of its parameters and seed (and of the documents it is given), so
a task file with ``generator: {name: ..., n: ..., seed: ...}`` always yields the same items.
Corpus tasks use held-out documents only: the run's validation split when a run directory is known,
otherwise the default split of the named corpus (``data.val_fraction`` 0.05, seed 1337), which is
what the default speedrun holds out.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from llmkit.eval.perplexity import EvalError

# Short words both corpora's tokenizers know; the copy and label tasks only need distinct tokens.
WORDS_EN = (
    "king",
    "queen",
    "lord",
    "lady",
    "night",
    "day",
    "sword",
    "crown",
    "love",
    "death",
    "heart",
    "blood",
    "moon",
    "star",
    "sea",
    "wind",
    "fire",
    "gold",
    "rose",
    "tree",
    "bird",
    "horse",
    "ship",
    "song",
    "bell",
    "door",
)
WORDS_ZH = list("春花月夜山水风雪江云星海龙马酒剑琴书松竹")


def copy_pattern(n: int = 120, seed: int = 0, length: int = 4) -> list[dict]:
    """``w1 w2 w3 w4 ->`` followed by the same words: the right answer repeats them in order; the
    wrong ones are rotations, which share most word pairs with it, so only the idea "copy from the
    first word" (which shots can show) separates them. Half the items are Chinese."""
    rng = random.Random(f"copy-pattern\0{seed}")
    items = []
    for i in range(n):
        pool, sep = (WORDS_ZH, "") if i % 2 else (WORDS_EN, " ")
        words = rng.sample(pool, length)
        rotations = [sep.join(words[k:] + words[:k]) for k in range(length)]
        order = list(range(length))
        rng.shuffle(order)
        items.append(
            {"question": sep.join(words) + " ->", "choices": [rotations[k] for k in order], "answer": order.index(0)}
        )
    return items


def label_map(n: int = 120, seed: int = 0, keys: int = 6) -> list[dict]:
    """``key:`` -> one of two labels, by a mapping drawn at random (so no prior knowledge helps):
    the mapping is only ever shown in the shots. Keys recur across items, so a shot often shows the
    queried key with its label; with zero shots the best possible accuracy is chance (50%)."""
    rng = random.Random(f"label-map\0{seed}")
    names = rng.sample(WORDS_EN, keys // 2) + rng.sample(WORDS_ZH, keys - keys // 2)
    labels = ["up", "down"]
    mapping = {k: rng.randrange(2) for k in names}
    if len(set(mapping.values())) < 2:  # both labels must occur
        mapping[names[0]] = 1 - mapping[names[0]]
    items = []
    for _ in range(n):
        key = rng.choice(names)
        items.append({"question": f"{key}:", "choices": labels, "answer": mapping[key]})
    return items


def _lines(doc: str) -> list[str]:
    return [line.strip() for line in doc.splitlines() if len(line.strip().split()) >= 3]


def next_line(documents: list[str], n: int = 200, seed: int = 0, context_lines: int = 3) -> list[dict]:
    """Verse: the lines before, then the true next line among three lines from elsewhere."""
    rng = random.Random(f"next-line\0{seed}")
    runs = [ls for ls in (_lines(d) for d in documents) if len(ls) > context_lines]
    pool = [line for ls in runs for line in ls]
    if not runs or len(pool) < 50:
        raise EvalError("next-line: the held-out documents have too few lines of verse to make a task")
    items = []
    for _ in range(n):
        ls = rng.choice(runs)
        i = rng.randrange(context_lines, len(ls))
        wrong = []
        while len(wrong) < 3:
            cand = rng.choice(pool)
            if cand != ls[i] and cand not in wrong:
                wrong.append(cand)
        choices = [ls[i], *wrong]
        rng.shuffle(choices)
        items.append(
            {"question": "\n".join(ls[i - context_lines : i]), "choices": choices, "answer": choices.index(ls[i])}
        )
    return items


_CLAUSE = re.compile(r"[^，。！？；]+[，。！？；]")


def poem_next_clause(documents: list[str], n: int = 200, seed: int = 0) -> list[dict]:
    """Classical Chinese poems (``《title》``, author, lines): the title and the clauses so far, then
    the true next clause among three clauses of the same length from other poems."""
    rng = random.Random(f"poem-next-clause\0{seed}")
    poems = []
    for doc in documents:
        head, _, body = doc.partition("\n")
        if not head.startswith("《"):
            continue
        lines = body.split("\n")
        if lines[0].startswith("作者"):
            head, lines = head + "\n" + lines[0], lines[1:]
        clauses = _CLAUSE.findall("".join("".join(lines).split()))
        if len(clauses) >= 2:
            poems.append((head, clauses))
    by_len: dict[int, list[str]] = {}
    for _, clauses in poems:
        for c in clauses:
            by_len.setdefault(len(c), []).append(c)
    if len(poems) < 5:
        raise EvalError("poem-next-clause: the held-out documents have fewer than 5 titled poems")
    items = []
    tries = 0
    while len(items) < n and tries < 50 * n:
        tries += 1
        title, clauses = rng.choice(poems)
        i = rng.randrange(1, len(clauses))
        others = sorted({c for c in by_len[len(clauses[i])] if c != clauses[i]})
        if len(others) < 3:
            continue
        choices = [clauses[i], *rng.sample(others, 3)]
        rng.shuffle(choices)
        items.append(
            {"question": title + "\n" + "".join(clauses[:i]), "choices": choices, "answer": choices.index(clauses[i])}
        )
    if not items:
        raise EvalError("poem-next-clause: no poem clause has three others of its length to choose from")
    return items


def last_word(documents: list[str], n: int = 200, seed: int = 0, context_lines: int = 2) -> list[dict]:
    """LAMBADA-style: a passage of verse with its last word removed; the target is that word (at
    least four letters). Scored by whether greedy decoding would write it, and by its loss."""
    rng = random.Random(f"last-word\0{seed}")
    runs = [ls for ls in (_lines(d) for d in documents) if len(ls) > context_lines]
    if not runs:
        raise EvalError("last-word: the held-out documents have too few lines of verse to make a task")
    items, tries = [], 0
    while len(items) < n and tries < 50 * n:
        tries += 1
        ls = rng.choice(runs)
        i = rng.randrange(context_lines, len(ls))
        m = re.match(r"^(.*\S)\s+([A-Za-z]{4,})[.,;:!?]?$", ls[i])
        if not m:
            continue
        items.append({"question": "\n".join([*ls[i - context_lines : i], m.group(1)]), "target": m.group(2)})
    return items


_SYNTHETIC: dict[str, Callable[..., list[dict]]] = {"copy-pattern": copy_pattern, "label-map": label_map}
_FROM_CORPUS: dict[str, Callable[..., list[dict]]] = {
    "next-line": next_line,
    "poem-next-clause": poem_next_clause,
    "last-word": last_word,
}


def held_out_documents(source: str) -> list[str]:
    """The default validation split of a corpus or file (what the default speedrun holds out)."""
    from llmkit.config import DataConfig, TrainConfig
    from llmkit.data.sources import iter_documents, split_documents

    cfg = DataConfig(sources=[source])
    _, val = split_documents(iter_documents(source, cfg), cfg.val_fraction, seed=TrainConfig().seed)
    return val


def generate(spec: Any, where: str, documents: dict[str, list[str]] | None = None) -> list[dict]:
    """Items from a task file's ``generator:`` mapping (``name``, ``n``, ``seed``, ``source`` ...)."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise EvalError(f"{where}: generator must be a mapping with a name ({', '.join([*_SYNTHETIC, *_FROM_CORPUS])})")
    params = {k: v for k, v in spec.items() if k not in ("name", "source")}
    name = spec["name"]
    try:
        if name in _SYNTHETIC:
            return _SYNTHETIC[name](**params)
        if name in _FROM_CORPUS:
            source = spec.get("source")
            if not source:
                raise EvalError(f"{where}: generator {name} needs a source (a corpus name or a file)")
            docs = (documents or {}).get(source)
            if docs is None:
                docs = held_out_documents(source)
            return _FROM_CORPUS[name](docs, **params)
    except TypeError as e:
        raise EvalError(f"{where}: generator {name}: {e}") from None
    raise EvalError(f"{where}: unknown generator {name!r}; known: {', '.join([*_SYNTHETIC, *_FROM_CORPUS])}")
