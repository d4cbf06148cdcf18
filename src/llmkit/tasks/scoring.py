"""The one scorer of answers: replies -> accuracy per task with its standard error and n.

SFT's evaluation, RL rewards' bookkeeping and ``llmkit eval`` all call :func:`score`, so an
accuracy means the same thing everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmkit.errors import LLMKitError
from llmkit.tasks.base import Example


@dataclass
class TaskScore:
    """Accuracy of ``n`` examples; ``stderr`` is the binomial standard error sqrt(p(1-p)/n)."""

    task: str
    correct: int
    n: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def stderr(self) -> float:
        p = self.accuracy
        return math.sqrt(p * (1 - p) / self.n) if self.n else 0.0

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "accuracy": self.accuracy,
            "stderr": self.stderr,
            "n": self.n,
            "correct": self.correct,
        }

    def __str__(self) -> str:
        return f"{100 * self.accuracy:.1f}% ± {100 * self.stderr:.1f} (n={self.n})"


def verdicts(examples: Sequence[Example], responses: Sequence[str]) -> list[bool]:
    """Whether each response answers its example (by the example's task's verifier)."""
    from llmkit.tasks.registry import get_task

    if len(examples) != len(responses):
        raise LLMKitError(f"score: {len(examples)} examples but {len(responses)} responses; give one response each")
    tasks: dict = {}
    out = []
    for ex, resp in zip(examples, responses, strict=True):
        if ex.task not in tasks:
            tasks[ex.task] = get_task(ex.task)
        out.append(bool(tasks[ex.task].verify(ex, resp)))
    return out


def score(examples: Sequence[Example], responses: Sequence[str], by_language: bool = False) -> dict[str, TaskScore]:
    """Per-task accuracy (keys ``task``, or ``task/lang`` with ``by_language``), tasks in first-seen
    order. A user JSONL task must have been loaded with :func:`get_task` (its path) first."""
    out: dict[str, TaskScore] = {}
    for ex, ok in zip(examples, verdicts(examples, responses), strict=True):
        key = f"{ex.task}/{ex.lang}" if by_language else ex.task
        s = out.setdefault(key, TaskScore(key, 0, 0))
        s.n += 1
        s.correct += int(ok)
    return out
