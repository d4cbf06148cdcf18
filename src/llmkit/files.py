"""Files written so that a crash never leaves half of one: a temporary name, then ``os.replace``.

This sits on the bottom floor (beside ``errors`` and ``console``) because every layer writes
small files (the resolved config, the tokenizer, stage records, reports, checkpoints' pointers).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: the process's umask, which files the user gets should honour


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh directory in ``parent`` to fill and then ``os.replace`` into place, with the
    permissions a plain ``mkdir`` gives (``tempfile.mkdtemp`` makes it private to the owner)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's file is owner-only; the user's umask decides
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented UTF-8 JSON (Chinese stays readable), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
