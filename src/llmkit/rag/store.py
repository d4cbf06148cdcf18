"""An index directory on disk: versions written whole, switched by one atomic rename.

``INDEX/CURRENT`` names the live version (``v7``); a version directory holds ``manifest.json``,
``chunks.jsonl``, ``bm25/`` and ``dense.faiss``. An update writes the next version beside the live
one, fsyncs it, then replaces ``CURRENT`` (``os.replace``), and only then deletes older versions.
A reader therefore always sees a complete version, and a process killed mid-update leaves the
previous index as it was. Writers take ``INDEX/.lock`` (``flock``), so two updates never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

from llmkit.checkpoint import atomic_write_text
from llmkit.errors import DataError

CURRENT = "CURRENT"
FORMAT = 1


def current_version(root: Path) -> Path | None:
    """The live version directory, or None when ``root`` holds no index yet."""
    pointer = Path(root) / CURRENT
    if not pointer.is_file():
        return None
    version = Path(root) / pointer.read_text(encoding="utf-8").strip()
    if not (version / "manifest.json").is_file():
        raise DataError(f"{root}: the index is damaged ({version.name} has no manifest.json); rebuild with --rebuild")
    return version


def is_index(root: Path) -> bool:
    return (Path(root) / CURRENT).is_file()


def read_manifest(version: Path) -> dict:
    try:
        manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{version / 'manifest.json'}: unreadable ({e}); rebuild the index with --rebuild") from None
    if manifest.get("format") != FORMAT:
        raise DataError(
            f"{version.parent}: index format {manifest.get('format')} is not {FORMAT}; rebuild it with --rebuild"
        )
    return manifest


@contextlib.contextmanager
def writing(root: Path):
    """Hold the index's write lock; yields the directory to write the next version into, which
    :func:`publish` then makes live. A failure leaves the live version untouched."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not an index directory; choose another --out")
    if root.is_dir() and any(root.iterdir()) and not is_index(root):
        raise DataError(f"{root}: is a non-empty directory that holds no index; choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        live = current_version(root)
        number = int(live.name[1:]) + 1 if live is not None else 1
        staging = root / f"v{number}"
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed update
        staging.mkdir()
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def publish(root: Path, staging: Path) -> None:
    """Make ``staging`` the live version (call inside :func:`writing`), then drop older ones."""
    for f in staging.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    atomic_write_text(Path(root) / CURRENT, staging.name + "\n")
    for old in Path(root).glob("v*"):
        if old.is_dir() and old.name != staging.name:
            shutil.rmtree(old, ignore_errors=True)
