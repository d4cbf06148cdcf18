"""Prompts for RL: JSONL rows with a ``prompt`` (text, or a list of chat messages) or ``messages``,
and any other fields, which are handed to the reward function (``answer``, ``tests``...)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit.errors import DataError


@dataclass
class PromptRow:
    """``messages`` (chat) or ``text`` (plain continuation), the text a reward function sees as
    ``prompt``, and the row's other fields."""

    text: str
    messages: list[dict] | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def _row(rec: Any, where: str) -> PromptRow:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object with a 'prompt' field, got {type(rec).__name__}")
    rest = {k: v for k, v in rec.items() if k not in ("prompt", "messages")}
    prompt = rec.get("prompt", rec.get("messages"))
    if isinstance(prompt, str) and prompt:
        return PromptRow(prompt, None, rest)
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt)
    ):
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
        users = [m["content"] for m in messages if m["role"] == "user"]
        return PromptRow(users[-1] if users else messages[-1]["content"], messages, rest)
    raise DataError(f"{where}: missing field 'prompt' (text, or a list of {{role, content}} messages)")


def read_prompts(path: str | Path) -> list[PromptRow]:
    """Every row of a JSONL prompt file; a malformed row is a one-line error naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prompt file not found; give a JSONL file with a 'prompt' field per line")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg}); fix or remove the line") from None
            rows.append(_row(rec, f"{path}:{n}"))
    if not rows:
        raise DataError(f'{path}: no prompts; add lines like {{"prompt": "..."}}')
    return rows
