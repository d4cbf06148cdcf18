"""Progress lines for people: one ``[llmkit] ...`` line per event, on stderr (stdout stays for results)."""

from __future__ import annotations

import sys


def say(msg: str) -> None:
    print(f"[llmkit] {msg}", file=sys.stderr, flush=True)
