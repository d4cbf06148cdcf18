"""What a task is: examples made from a seed, split by construction, checked by a named verifier.

A generated task draws problems from a random generator; every problem has a *key* (its content
without the language, e.g. ``37+45``) and lands in the test split when a stable hash of
(task, key) falls below ``test_fraction``. The split is therefore a property of the problem, not of
the seed or the language: no test problem can appear in any training set, whatever seeds either
was made with, and a problem never crosses over by being asked in the other language.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from llmkit.errors import ConfigError
from llmkit.tasks.verifiers import VERIFIERS

SPLITS = ("train", "test")
LANGUAGES = ("en", "zh")


@dataclass
class Example:
    """One item of a task. ``prompt`` is the user's text; ``answer`` the canonical final answer;
    ``solution`` the full reference reply (worked steps where the family has them) ending in the
    final-answer line; ``choices`` for multiple choice; ``meta`` what the verifier needs."""

    task: str
    id: str
    lang: str
    prompt: str
    answer: str
    solution: str
    choices: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        return cls(
            **{k: d[k] for k in ("task", "id", "lang", "prompt", "answer", "solution")},
            choices=d.get("choices"),
            meta=dict(d.get("meta") or {}),
        )


@dataclass
class Problem:
    """A drawn problem: its language-free ``key`` and a function rendering it in a language as
    (prompt, answer, solution, meta)."""

    key: str
    render: Callable[[str], tuple[str, str, str, dict]]
    choices: Callable[[str], list[str] | None] | None = None


def final_line(answer: str, lang: str) -> str:
    """The final-answer line every solution ends with."""
    return f"答案：{answer}" if lang == "zh" else f"Answer: {answer}"


def stable_fraction(*parts: str) -> float:
    """A number in [0, 1) fixed by ``parts`` (sha256; the same in every process and Python)."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Task:
    """A task of the suite. Subclasses implement :meth:`draw` (generated tasks) or override
    :meth:`make` (tasks made from documents or files)."""

    name: str = ""
    family: str = ""
    description: str = ""
    languages: tuple[str, ...] = LANGUAGES
    verifier: str = "exact"
    test_fraction: float = 0.2
    """Share of the problem space reserved for the test split."""
    max_new_tokens: int = 32
    """Enough tokens for a reference solution (generation budget when evaluating)."""

    def draw(self, rng: random.Random) -> Problem:
        raise NotImplementedError

    def split_of(self, key: str) -> str:
        return "test" if stable_fraction(self.name, key) < self.test_fraction else "train"

    def make(self, split: str, n: int, seed: int = 0, languages: tuple[str, ...] | None = None) -> list[Example]:
        """``n`` distinct problems of ``split``, languages taken in turn; the same arguments give the
        same list. Fewer than ``n`` come back only when the split's problem space is smaller."""
        check_split(split)
        langs = self._languages(languages)
        rng = random.Random(f"{self.name}\0{split}\0{seed}")
        seen: set[str] = set()
        out: list[Example] = []
        misses = 0
        while len(out) < n and misses < 2000 + 50 * n:
            problem = self.draw(rng)
            if problem.key in seen or self.split_of(problem.key) != split:
                misses += 1
                continue
            seen.add(problem.key)
            lang = langs[len(out) % len(langs)]
            out.append(self.example(problem, lang))
        return out

    def example(self, problem: Problem, lang: str) -> Example:
        prompt, answer, solution, meta = problem.render(lang)
        meta = {"key": problem.key, **meta}
        uid = hashlib.sha1(f"{self.name}\0{problem.key}".encode()).hexdigest()[:12]
        choices = problem.choices(lang) if problem.choices else None
        return Example(self.name, f"{self.name}-{uid}-{lang}", lang, prompt, answer, solution, choices, meta)

    def verify(self, example: Example, response: str) -> bool:
        """True when ``response`` (a model's reply) gives this example's answer."""
        return VERIFIERS[self.verifier](example, response)

    def _languages(self, languages) -> tuple[str, ...]:
        langs = tuple(languages or self.languages)
        bad = [x for x in langs if x not in self.languages]
        if bad or not langs:
            raise ConfigError(
                f"task {self.name}: language {bad[0] if bad else '(none)'!r}; it has {', '.join(self.languages)}"
            )
        return langs

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "languages": list(self.languages),
            "verifier": self.verifier,
            "description": self.description,
        }

    def __repr__(self) -> str:
        return f"<task {self.name} ({self.family})>"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split {split!r}: use 'train' or 'test'")


def to_messages(example: Example, system: str | None = None, with_answer: bool = True) -> list[dict]:
    """The example as chat messages: (system,) user prompt, and the reference reply when
    ``with_answer`` (training data); without it, the messages to generate a reply from."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": example.prompt})
    if with_answer:
        messages.append({"role": "assistant", "content": example.solution})
    return messages


_SHOT_LABELS = {"en": ("Question: ", "Answer: "), "zh": ("问题：", "回答：")}
SHOT_STOP = "\n\n"
"""Few-shot completions end at the first blank line (the next shot would begin there)."""


def few_shot_prompt(example: Example, shots: list[Example]) -> str:
    """A base-model prompt: each shot as question + reference reply, blank lines between, then the
    example's question and the reply label. Its reply ends at :data:`SHOT_STOP`."""
    q, a = _SHOT_LABELS.get(example.lang, _SHOT_LABELS["en"])
    parts = [f"{q}{s.prompt}\n{a}{s.solution}" for s in shots]
    parts.append(f"{q}{example.prompt}\n{a}")
    return "\n\n".join(parts)


def pick_shots(pool: list[Example], example: Example, k: int, seed: int) -> list[Example]:
    """``k`` examples of ``pool`` of ``example``'s task, in its language where possible (the same
    ones for the same seed and example), never the example itself."""
    mine = [p for p in pool if p.task == example.task and p.id != example.id]
    same = [p for p in mine if p.lang == example.lang] or mine
    rng = random.Random(f"{seed}\0{example.id}")
    return rng.sample(same, min(k, len(same)))
