"""Users' own tasks: a JSONL file of items, checked by a verifier named in the file.

One JSON object per line::

    {"prompt": "2 + 2 = ?", "answer": "4", "verifier": "number"}
    {"prompt": "法国的首都是哪里？", "answer": "巴黎", "lang": "zh", "solution": "答案：巴黎"}

``prompt`` and ``answer`` are required. ``verifier`` (one of :data:`llmkit.tasks.verifiers.VERIFIERS`)
is given on the first line and applies to every line after it until another line names a
different one; it defaults to ``exact``. Optional: ``lang`` (default ``en``), ``solution`` (default
the final-answer line), ``choices``, ``meta``, ``id``, and ``split`` (``train``/``test``; without it
an item's split is a stable hash of its prompt, so items never cross over when the file grows).
"""

from __future__ import annotations

import json
from pathlib import Path

from llmkit.errors import DataError
from llmkit.tasks.base import Example, Task, check_split, final_line, stable_fraction
from llmkit.tasks.verifiers import VERIFIERS


class JsonlTask(Task):
    family = "user"

    def __init__(self, path: str | Path, test_fraction: float = 0.2):
        self.path = Path(path)
        self.name = self.path.stem
        self.test_fraction = test_fraction
        self.description = f"user task from {self.path}"
        self._items = self._read()
        self._verifier_of = {e.id: v for e, v, _ in self._items}
        self.languages = tuple(sorted({e.lang for e, _, _ in self._items})) or ("en",)
        verifiers = sorted({v for _, v, _ in self._items})
        self.verifier = verifiers[0] if len(verifiers) == 1 else "+".join(verifiers)
        longest = max((len(e.solution) for e, _, _ in self._items), default=16)
        self.max_new_tokens = max(16, min(512, 2 * longest))

    def _read(self) -> list[tuple[Example, str, str]]:
        if not self.path.is_file():
            raise DataError(
                f"{self.path}: task file not found; give a .jsonl file of {{prompt, answer, verifier}} lines"
            )
        items, verifier = [], "exact"
        for lineno, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{self.path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg}); write one JSON object per line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{where}: a line must be a JSON object with prompt and answer")
            missing = [k for k in ("prompt", "answer") if not isinstance(rec.get(k), str) or not rec[k].strip()]
            if missing:
                raise DataError(f"{where}: {missing[0]!r} is missing or empty; every line needs prompt and answer")
            verifier = rec.get("verifier", verifier)
            if verifier not in VERIFIERS:
                raise DataError(f"{where}: verifier {verifier!r} is unknown; use one of {', '.join(VERIFIERS)}")
            lang = rec.get("lang", "en")
            split = rec.get("split")
            if split is None:
                split = "test" if stable_fraction(self.name, rec["prompt"]) < self.test_fraction else "train"
            elif split not in ("train", "test"):
                raise DataError(f"{where}: split {split!r}; use 'train' or 'test'")
            ex = Example(
                task=self.name,
                id=str(rec.get("id", f"{self.name}-{lineno}")),
                lang=lang,
                prompt=rec["prompt"],
                answer=rec["answer"],
                solution=rec.get("solution") or final_line(rec["answer"], lang),
                choices=rec.get("choices"),
                meta=dict(rec.get("meta") or {}),
            )
            items.append((ex, verifier, split))
        if not items:
            raise DataError(f"{self.path}: no items; add lines of {{prompt, answer, verifier}}")
        return items

    def make(self, split: str, n: int, seed: int = 0, languages: tuple[str, ...] | None = None) -> list[Example]:
        """The file's items of ``split`` (in a seeded order), at most ``n``."""
        import random

        check_split(split)
        langs = set(languages or self.languages)
        pool = [e for e, _, s in self._items if s == split and e.lang in langs]
        random.Random(f"{self.name}\0{split}\0{seed}").shuffle(pool)
        return pool[:n]

    def verify(self, example: Example, response: str) -> bool:
        return VERIFIERS[self._verifier_of.get(example.id, self._items[0][1])](example, response)
