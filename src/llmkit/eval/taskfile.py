"""Evaluation tasks as data: a small YAML file (or a bare JSONL file) read by one generic runner.

A task file looks like lm-eval's, so its tasks port both ways::

    name: label-map
    kind: multiple_choice          # or loglikelihood (a single target, scored by greedy match)
    description: ""                # text before the shots
    template: "{question}"         # each item's text; {field} is any field of the item
    target_delimiter: " "          # between the text and the answer
    fewshot_delimiter: "\\n\\n"     # between shots
    data: items.jsonl              # relative to this file; or `items: [...]` inline,
                                   # or `generator: {name: copy-pattern, n: 200}`
    fewshot_data: shots.jsonl      # optional: shots come from here instead of the other items

A ``multiple_choice`` item has ``choices`` (a list of strings) and ``answer`` (the index of the right
one); a ``loglikelihood`` item has ``target`` (the text to score). A bare ``.jsonl`` file is a
multiple-choice task named after the file, with the defaults above. Every mistake (a missing field,
an answer index out of range, no items at all) is one :class:`EvalError` naming the file and line.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmkit.eval.perplexity import EvalError

KINDS = ("multiple_choice", "loglikelihood")
BUILTIN_DIR = Path(__file__).parent / "tasks"
_FIELDS = {
    "name",
    "kind",
    "description",
    "template",
    "target_delimiter",
    "fewshot_delimiter",
    "data",
    "items",
    "generator",
    "fewshot_data",
}


@dataclass
class Task:
    """A loaded task: its items (dicts) and how to turn an item into a prompt and answers."""

    name: str
    items: list[dict[str, Any]]
    kind: str = "multiple_choice"
    description: str = ""
    template: str = "{question}"
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    fewshot: list[dict[str, Any]] | None = None
    """Shots are drawn from here when given, else from the other items of the task."""
    source: str = ""
    where: list[str] = field(default_factory=list)
    """Per item, where it came from (``file:line``) for error messages."""

    def text(self, item: dict[str, Any]) -> str:
        return self.template.format_map(item)

    def target(self, item: dict[str, Any]) -> str:
        """The right answer's text (no delimiter)."""
        return item["choices"][item["answer"]] if self.kind == "multiple_choice" else item["target"]


def builtin_tasks() -> list[str]:
    """Names of the task files shipped with llmkit (``llmkit eval --task NAME``)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve_task_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".jsonl"):
        if not path.is_file():
            raise EvalError(f"{path}: task file not found")
        return path
    builtin = BUILTIN_DIR / f"{name_or_path}.yaml"
    if not builtin.is_file():
        raise EvalError(
            f"unknown task {name_or_path!r}; built-in tasks: {', '.join(builtin_tasks())} "
            "(or give a path to a .yaml or .jsonl task file)"
        )
    return builtin


def load_task(name_or_path: str, documents: dict[str, list[str]] | None = None) -> Task:
    """Load a built-in task by name or a task file by path, checking every item.

    ``documents`` (source -> held-out texts) feeds the generators that make tasks from corpora;
    without it they read the corpus and keep its default validation split.
    """
    path = resolve_task_path(name_or_path)
    if path.suffix == ".jsonl":
        items, where = _read_jsonl(path)
        return _checked(Task(name=path.stem, items=items, source=str(path), where=where))
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise EvalError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(spec, dict):
        raise EvalError(f"{path}: a task file is a mapping of fields (name, kind, template, data or items)")
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise EvalError(f"{path}: unknown field {unknown[0]!r}; known fields: {', '.join(sorted(_FIELDS))}")
    sources = [k for k in ("data", "items", "generator") if k in spec]
    if len(sources) != 1:
        raise EvalError(f"{path}: give exactly one of data (a JSONL file), items (a list) or generator")
    if "data" in spec:
        items, where = _read_jsonl(path.parent / str(spec["data"]))
    elif "items" in spec:
        items = spec["items"]
        if not isinstance(items, list):
            raise EvalError(f"{path}: items must be a list of mappings")
        where = [f"{path}: items[{i}]" for i in range(len(items))]
    else:
        from llmkit.eval.builtin import generate

        items = generate(spec["generator"], str(path), documents)
        where = [f"{path}: generated item {i}" for i in range(len(items))]
    fewshot = None
    if "fewshot_data" in spec:
        fewshot, _ = _read_jsonl(path.parent / str(spec["fewshot_data"]))
    task = Task(
        name=str(spec.get("name", path.stem)),
        items=items,
        kind=str(spec.get("kind", "multiple_choice")),
        description=str(spec.get("description", "")),
        template=str(spec.get("template", "{question}")),
        target_delimiter=str(spec.get("target_delimiter", " ")),
        fewshot_delimiter=str(spec.get("fewshot_delimiter", "\n\n")),
        fewshot=fewshot,
        source=str(path),
        where=where,
    )
    return _checked(task)


def _read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    if not path.is_file():
        raise EvalError(f"{path}: task data file not found")
    items, where = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalError(f"{path}:{n}: not valid JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(item, dict):
            raise EvalError(f"{path}:{n}: each line must be a JSON object")
        items.append(item)
        where.append(f"{path}:{n}")
    return items, where


def _template_fields(template: str, where: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError as e:
        raise EvalError(f"{where}: template {template!r} is not a valid format string ({e})") from None


def _checked(task: Task) -> Task:
    """Validate every item (and shot) so the runner never meets a malformed one."""
    if task.kind not in KINDS:
        raise EvalError(f"{task.source}: kind {task.kind!r}; use {' or '.join(KINDS)}")
    if not task.items:
        raise EvalError(f"{task.source}: the task has zero items; add items (one JSON object per line)")
    needed = _template_fields(task.template, task.source)
    pools = [(task.items, task.where)]
    if task.fewshot is not None:
        pools.append((task.fewshot, [f"{task.source}: fewshot item {i}" for i in range(len(task.fewshot))]))
    for items, where in pools:
        for item, at in zip(items, where, strict=True):
            if not isinstance(item, dict):
                raise EvalError(f"{at}: an item must be a mapping of fields")
            answer_fields = ["choices", "answer"] if task.kind == "multiple_choice" else ["target"]
            for f in [*needed, *answer_fields]:
                if f not in item:
                    raise EvalError(f"{at}: missing field {f!r} (template {task.template!r}, kind {task.kind})")
            if task.kind == "multiple_choice":
                _check_choices(item, at)
            elif not isinstance(item["target"], str) or not item["target"]:
                raise EvalError(f"{at}: target must be a non-empty string")
    return task


def _check_choices(item: dict, at: str) -> None:
    choices, answer = item["choices"], item["answer"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise EvalError(f"{at}: choices must be a list of at least two non-empty strings")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise EvalError(f"{at}: answer must be the index of the right choice (an integer), got {answer!r}")
    if not 0 <= answer < len(choices):
        raise EvalError(
            f"{at}: answer index {answer} is out of range for {len(choices)} choices (0..{len(choices) - 1})"
        )
