"""Finding tasks by name: the built-in families, parametric names (``add4``) and JSONL files."""

from __future__ import annotations

from pathlib import Path

from llmkit.errors import ConfigError
from llmkit.tasks import arithmetic, corpus, formats, strings, word_problems
from llmkit.tasks.base import Task

_FAMILIES = (arithmetic, strings, word_problems, formats, corpus)
_BUILTIN: dict[str, Task] = {t.name: t for fam in _FAMILIES for t in fam.TASKS}
_USER: dict[str, Task] = {}


def list_tasks(family: str | None = None) -> list[Task]:
    """The built-in tasks (in suite order), optionally of one family."""
    return [t for t in _BUILTIN.values() if family is None or t.family == family]


def get_task(name: str) -> Task:
    """A task by name (``add2``, ``poem_author``), parametric arithmetic (``add5``, ``mul3``,
    ``compare4``), or a path to a user ``.jsonl`` task file (afterwards also found by its stem)."""
    if name in _BUILTIN:
        return _BUILTIN[name]
    if name in _USER:
        return _USER[name]
    task = arithmetic.parse(name)
    if task is not None:
        return task
    if name.endswith(".jsonl") or Path(name).is_file():
        from llmkit.tasks.user import JsonlTask

        task = JsonlTask(name)
        _USER[task.name] = task
        return task
    raise ConfigError(f"unknown task {name!r}; `llmkit tasks list` shows the tasks, or give a .jsonl file")


def corpus_tasks(split: corpus.CorpusSplit, sources: list[str] | None = None) -> list[Task]:
    """The corpus tasks over documents split as a run split them, limited to ``sources`` (the run's
    corpora; a task whose corpus the run did not pretrain on is left out)."""
    out = []
    for t in corpus.TASKS:
        if sources is None or t.source in sources:
            out.append(t.with_split(split))
    return out
