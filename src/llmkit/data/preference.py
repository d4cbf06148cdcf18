"""Preference pairs: a prompt with a chosen and a rejected answer, read from JSONL files, saved
``datasets`` directories or ``hf:NAME[:CONFIG]`` hub datasets.

The formats TRL documents are accepted:

* plain text: ``{"prompt": "...", "chosen": "...", "rejected": "..."}`` (answers continue the prompt);
* conversational: ``prompt`` is a list of chat messages and ``chosen``/``rejected`` are assistant
  messages (a list with one ``{"role": "assistant", "content": ...}``, or just the text);
* implicit prompt: no ``prompt``, and ``chosen``/``rejected`` are whole conversations that share
  every message but the last.

A row that cannot be a pair is a one-line :class:`DataError` naming the file, the row and the field
(nothing has been trained yet, so stopping costs nothing). A pair whose chosen and rejected answers
are identical teaches nothing and is skipped and counted (:class:`PairStats`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.errors import DataError

Messages = list[dict[str, str]]


@dataclass
class PreferencePair:
    """``messages`` (a conversation awaiting the assistant's reply) or ``prompt`` (plain text), and
    the two answers as text."""

    chosen: str
    rejected: str
    prompt: str = ""
    messages: Messages | None = None
    source: str = ""
    """Where the pair came from (``file:line``), for messages about it."""


@dataclass
class PairStats:
    rows: int = 0
    identical: int = 0
    """Pairs skipped because chosen == rejected."""

    def warnings(self) -> list[str]:
        if not self.identical:
            return []
        return [f"skipped {self.identical} of {self.rows} pairs whose chosen and rejected answers are identical"]


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _answer(value: Any, where: str, name: str) -> str:
    """An answer given as text, or as assistant message(s) whose last content is the answer."""
    if isinstance(value, str):
        return value
    if _is_messages(value) and value and value[-1]["role"] == "assistant":
        return str(value[-1]["content"])
    raise DataError(f"{where}: field {name!r} must be text or a list of messages ending with the assistant's")


def pair_from_record(rec: Any, where: str) -> PreferencePair:
    """One record (a dict) as a pair; one-line DataError naming ``where`` and the field otherwise."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object with prompt, chosen and rejected, got {type(rec).__name__}")
    for name in ("chosen", "rejected"):
        if rec.get(name) in (None, "", []):
            raise DataError(
                f"{where}: missing field {name!r}; preference rows need prompt (or whole conversations), "
                "chosen and rejected"
            )
    chosen, rejected, prompt = rec["chosen"], rec["rejected"], rec.get("prompt")
    if prompt is None:  # implicit prompt: two conversations that differ in the last message only
        if not (_is_messages(chosen) and _is_messages(rejected)) or len(chosen) < 2:
            raise DataError(
                f"{where}: missing field 'prompt' (give it, or give chosen/rejected as whole conversations)"
            )
        if chosen[:-1] != rejected[:-1]:
            raise DataError(
                f"{where}: without a 'prompt' field, chosen and rejected must share all but the last message"
            )
        prompt = chosen[:-1]
    if isinstance(prompt, str):
        if _is_messages(chosen) or _is_messages(rejected):
            prompt = [{"role": "user", "content": prompt}]
        else:
            return PreferencePair(chosen, rejected, prompt=prompt, source=where)
    if not _is_messages(prompt) or not prompt:
        raise DataError(f"{where}: field 'prompt' must be text or a list of {{role, content}} messages")
    messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
    return PreferencePair(
        _answer(chosen, where, "chosen"), _answer(rejected, where, "rejected"), messages=messages, source=where
    )


def _jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{n}", json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg}); fix or remove the line") from None


def _dataset_records(source: str) -> Iterator[tuple[str, Any]]:
    import datasets

    try:
        if source.startswith("hf:"):
            name, _, config = source[3:].partition(":")
            ds = datasets.load_dataset(name, config or None, split="train")
        else:
            ds = datasets.load_from_disk(source)
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    except Exception as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"{source}: cannot load the dataset ({reason}); check the name or path") from None
    for i, rec in enumerate(ds):
        yield f"{source}[{i}]", rec


def records(source: str) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` of a JSONL file, a saved ``datasets`` directory or ``hf:NAME[:CONFIG]``."""
    if not source:
        raise DataError("no preference data given; pass a JSONL file, a saved dataset or hf:NAME")
    if source.startswith("hf:") or Path(source).is_dir():
        yield from _dataset_records(source)
        return
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: preference file not found; give a JSONL file, a saved dataset or hf:NAME")
    yield from _jsonl_records(path)


def read_pairs(source: str | Iterable[tuple[str, Any]], stats: PairStats | None = None) -> list[PreferencePair]:
    """Every usable pair of ``source`` (a path/name, or ``(where, record)`` tuples); identical
    answers are skipped and counted in ``stats``. No pair at all is a DataError."""
    stats = stats if stats is not None else PairStats()
    name = source if isinstance(source, str) else "preference data"
    out = []
    for where, rec in records(source) if isinstance(source, str) else source:
        pair = rec if isinstance(rec, PreferencePair) else pair_from_record(rec, where)
        stats.rows += 1
        if pair.chosen.strip() == pair.rejected.strip():
            stats.identical += 1
            continue
        out.append(pair)
    if not out:
        raise DataError(
            f"{name}: no usable preference pairs ({stats.rows} rows, {stats.identical} with identical answers)"
        )
    return out
