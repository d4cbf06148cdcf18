"""Text sources: named corpora, files, directories, globs, JSONL, Parquet, ``datasets``, the hub.

Everything becomes a stream of documents (``str``). Bad input is handled the way a person would
want: invalid UTF-8 is replaced with U+FFFD and counted (a few bad bytes should not stop a run),
malformed JSONL lines are skipped and counted with the first line number kept (or fatal with
``data.strict=true``), and anything that leaves no text at all is a :class:`DataError` of one
line that names the path and the fix. :class:`SourceStats` collects the counts; its
:meth:`~SourceStats.warnings` are what the pipeline and ``llmkit data stats`` print.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from llmkit.config import DataConfig
from llmkit.errors import ConfigError, DataError

_SURROGATE_ESCAPES = re.compile("[\udc80-\udcff]")
_GLOB_CHARS = set("*?[")
_BINARY_SUFFIXES = {
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".webp",
    ".bmp",
    ".ico",
    ".pdf",
    ".zip",
    ".gz",
    ".tgz",
    ".bz2",
    ".xz",
    ".zst",
    ".7z",
    ".tar",
    ".whl",
    ".deb",
    ".so",
    ".dll",
    ".exe",
    ".bin",
    ".pt",
    ".pth",
    ".safetensors",
    ".npy",
    ".npz",
    ".pkl",
    ".arrow",
    ".mp3",
    ".mp4",
    ".wav",
    ".ogg",
    ".sqlite",
    ".db",
    ".pyc",
    ".dat",
    ".lock",
}


@dataclass
class SourceStats:
    """What reading a source found: sizes, and the problems that were tolerated."""

    documents: int = 0
    chars: int = 0
    bytes: int = 0
    invalid_utf8_files: int = 0
    replaced_chars: int = 0
    malformed_lines: int = 0
    first_malformed: str = ""
    missing_field: int = 0

    def warnings(self) -> list[str]:
        out = []
        if self.invalid_utf8_files:
            out.append(
                f"replaced {self.replaced_chars} invalid UTF-8 bytes with U+FFFD in "
                f"{self.invalid_utf8_files} file(s); re-encode the files as UTF-8 to keep them"
            )
        if self.malformed_lines:
            out.append(
                f"skipped {self.malformed_lines} malformed JSONL lines (first at {self.first_malformed}); "
                "use data.strict=true (--strict on `llmkit data`) to fail instead"
            )
        if self.missing_field:
            out.append(
                f"skipped {self.missing_field} records without a text field (or with non-text, empty "
                "values); check data.text_field (--text-field on `llmkit data`)"
            )
        return out

    def add(self, doc: str) -> str:
        """Count a document on its way out (and make sure it is encodable UTF-8)."""
        try:
            n = len(doc.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates from a foreign loader: not text, replace them
            doc = doc.encode("utf-8", errors="replace").decode("utf-8")
            n = len(doc.encode("utf-8"))
        self.documents += 1
        self.chars += len(doc)
        self.bytes += n
        return doc


def _decode(raw: bytes, stats: SourceStats) -> tuple[str, int]:
    """UTF-8 decode; each invalid byte becomes U+FFFD and is counted (never fatal)."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text, n = _SURROGATE_ESCAPES.subn("\ufffd", raw.decode("utf-8", errors="surrogateescape"))
        stats.replaced_chars += n
        return text, n


# ---------------------------------------------------------------------- single files
def read_text_file(path: Path, stats: SourceStats) -> str:
    """A whole file as text (leading BOM dropped); invalid UTF-8 replaced and counted in ``stats``."""
    text, bad = _decode(path.read_bytes(), stats)
    if bad:
        stats.invalid_utf8_files += 1
    return text.removeprefix("\ufeff")


def _iter_jsonl(path: Path, cfg: DataConfig, stats: SourceStats) -> Iterator[str]:
    field = cfg.text_field
    records = with_field = 0
    fields_seen: dict[str, None] = {}
    bad_file = False
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line, bad = _decode(raw, stats)
            bad_file = bad_file or bool(bad)
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                problem = None if isinstance(rec, dict) else f"a JSON {type(rec).__name__}, not an object"
            except json.JSONDecodeError as e:
                problem = f"not JSON ({e.msg} at column {e.colno})"
            if problem:
                where = f"{path}:{lineno}"
                if cfg.strict:
                    raise DataError(
                        f"{where}: not a JSON object ({problem}); fix the line, or drop data.strict=true "
                        "(--strict) to skip malformed lines"
                    )
                stats.malformed_lines += 1
                stats.first_malformed = stats.first_malformed or where
                continue
            records += 1
            if len(fields_seen) < 20:
                fields_seen.update(dict.fromkeys(rec))
            value = rec.get(field)
            if field in rec:
                with_field += 1
            if isinstance(value, str) and value:
                yield value
            else:
                stats.missing_field += 1
    if bad_file:
        stats.invalid_utf8_files += 1
    if records and not with_field:
        raise DataError(
            f"{path}: no record has field {field!r}; set data.text_field=<name> (--text-field <name>) "
            f"(fields seen: {', '.join(fields_seen) or 'none'})"
        )


def _check_column(where, field: str, names: list[str]) -> None:
    if field not in names:
        raise DataError(
            f"{where}: no record has field {field!r}; set data.text_field=<name> (--text-field <name>) "
            f"(fields seen: {', '.join(names) or 'none'})"
        )


def _iter_values(values: Iterable, stats: SourceStats) -> Iterator[str]:
    for v in values:
        if isinstance(v, str) and v:
            yield v
        else:
            stats.missing_field += 1


def _iter_parquet(path: Path, cfg: DataConfig, stats: SourceStats) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}); check the file") from None
    _check_column(path, cfg.text_field, pf.schema_arrow.names)
    for batch in pf.iter_batches(columns=[cfg.text_field], batch_size=4096):
        yield from _iter_values(batch.column(0).to_pylist(), stats)


def _iter_file(path: Path, cfg: DataConfig, stats: SourceStats) -> Iterator[str]:
    try:
        yield from _iter_readable_file(path, cfg, stats)
    except (PermissionError, IsADirectoryError, OSError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(
            f"{path}: cannot read ({e.strerror or type(e).__name__}); check the file and its permissions"
        ) from None


def _iter_readable_file(path: Path, cfg: DataConfig, stats: SourceStats) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _iter_jsonl(path, cfg, stats)
    elif suffix == ".parquet":
        yield from _iter_parquet(path, cfg, stats)
    else:
        text = read_text_file(path, stats)
        if text:
            yield text


# ---------------------------------------------------------------------- datasets
def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _iter_records(ds, where: str, cfg: DataConfig, stats: SourceStats) -> Iterator[str]:
    names = list(getattr(ds, "column_names", None) or [])
    if names:
        _check_column(where, cfg.text_field, names)
        for batch in ds.select_columns([cfg.text_field]).iter(batch_size=1000):
            yield from _iter_values(batch[cfg.text_field], stats)
        return
    seen = False
    for i, rec in enumerate(ds):  # streamed data without a known schema
        if cfg.text_field in rec:
            seen = True
        elif i >= 1000 and not seen:
            _check_column(where, cfg.text_field, list(rec))
        yield from _iter_values([rec.get(cfg.text_field)], stats)


def _pick_split(ds, where: str, cfg: DataConfig):
    import datasets

    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if cfg.split not in ds:
            raise DataError(f"{where}: has no split {cfg.split!r} (splits: {', '.join(ds)}); set data.split=<name>")
        return ds[cfg.split]
    return ds


def _iter_saved_dataset(path: Path, cfg: DataConfig, stats: SourceStats) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(
            f"{path}: not a readable saved dataset ({type(e).__name__}); re-save it with Dataset.save_to_disk"
        ) from None
    yield from _iter_records(_pick_split(ds, str(path), cfg), str(path), cfg, stats)


def _iter_hub(spec: str, cfg: DataConfig, stats: SourceStats) -> Iterator[str]:
    import datasets

    name, _, config = spec[3:].partition(":")
    if not name:
        raise DataError(f"{spec!r}: write hub datasets as hf:NAME or hf:NAME:CONFIG")
    try:
        ds = datasets.load_dataset(name, config or None, split=cfg.split, streaming=cfg.streaming)
    except Exception as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise DataError(
            f"{spec}: cannot load hub dataset ({reason}); check the name, data.split, and network"
        ) from None
    yield from _iter_records(ds, spec, cfg, stats)


# ---------------------------------------------------------------------- directories, globs
def _is_binary(path: Path) -> bool:
    """A file given by name that is not text: a binary extension, or a NUL byte in its first 8 KB."""
    if path.suffix.lower() in _BINARY_SUFFIXES:
        return True
    if path.suffix.lower() in (".jsonl", ".parquet"):
        return False
    try:
        with open(path, "rb") as f:
            return b"\x00" in f.read(8192)
    except OSError:
        return False  # reading it later gives the error that names the problem


def _looks_textual(path: Path) -> bool:
    if path.name.startswith(".") or path.suffix.lower() in _BINARY_SUFFIXES:
        return False
    if path.suffix.lower() in (".jsonl", ".parquet"):
        return True
    with open(path, "rb") as f:
        return b"\x00" not in f.read(8192)


def _dir_files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel) or not p.is_file():
            continue
        if _looks_textual(p):
            out.append(p)
    return out


def _iter_paths(paths: list[Path], where: str, cfg: DataConfig, stats: SourceStats) -> Iterator[str]:
    for p in paths:
        if p.is_dir():
            if _is_saved_dataset(p):
                yield from _iter_saved_dataset(p, cfg, stats)
            else:
                yield from _iter_paths(_dir_files(p), str(p), cfg, stats)
        else:
            yield from _iter_file(p, cfg, stats)


def _raw_documents(source: str, cfg: DataConfig, stats: SourceStats, cache_dir: Path | None) -> Iterator[str]:
    from llmkit.data.corpora import corpus_documents, corpus_names

    if source in corpus_names():
        yield from corpus_documents(source, cache_dir)
        return
    if source.startswith("hf:"):
        yield from _iter_hub(source, cfg, stats)
        return
    path = Path(source).expanduser()
    if path.exists():
        if path.is_file() and _is_binary(path):
            raise DataError(f"{source}: a binary file, not text; remove it from the sources or convert it to text")
        if path.is_dir() and not _is_saved_dataset(path) and not _dir_files(path):
            raise DataError(f"{source}: directory has no text, .jsonl or .parquet files; add some or fix the path")
        yield from _iter_paths([path], source, cfg, stats)
        return
    if _GLOB_CHARS & set(source):
        matches = sorted(Path(m) for m in _glob.glob(str(path), recursive=True))
        matches = [m for m in matches if m.is_dir() or _looks_textual(m)]
        if not matches:
            raise DataError(
                f"{source}: glob matches no files; check the pattern (quote it so the shell does not expand it)"
            )
        yield from _iter_paths(matches, source, cfg, stats)
        return
    raise DataError(
        f"{source}: no such file or directory, and not a corpus ({', '.join(corpus_names())}) or hf:NAME; fix the path"
    )


def iter_documents(
    source: str, cfg: DataConfig, stats: SourceStats | None = None, cache_dir: Path | None = None
) -> Iterator[str]:
    """Yield the non-empty documents of ``source`` (at most ``cfg.max_documents``, 0 = all),
    counting them into ``stats``. Raises DataError when the source gives no text at all."""
    stats = stats if stats is not None else SourceStats()
    limit = cfg.max_documents
    n = 0
    malformed_before = stats.malformed_lines  # ``stats`` may be shared by several sources
    for doc in _raw_documents(source, cfg, stats, cache_dir):
        if not doc:
            continue
        yield stats.add(doc)
        n += 1
        if limit and n >= limit:
            return
    if n == 0:
        if stats.malformed_lines > malformed_before:
            first = "" if malformed_before else f" (first at {stats.first_malformed})"
            raise DataError(f"{source}: every JSONL line is malformed{first}; write one JSON object per line")
        p = Path(source)
        if p.is_file() and p.suffix.lower() not in (".jsonl", ".parquet"):
            what = "is empty"
        else:
            what = f"has no text (every file is empty or no record has a non-empty {cfg.text_field!r})"
        raise DataError(f"{source} {what}; add text or remove it from the sources")


def iter_corpus(cfg: DataConfig, stats: SourceStats | None = None, cache_dir: Path | None = None) -> Iterator[str]:
    """The documents of every source in ``cfg.sources``, in order, counted into one ``stats``."""
    if not cfg.sources:
        raise ConfigError("data.sources is empty; name at least one corpus, file, directory, glob or hf:NAME")
    stats = stats if stats is not None else SourceStats()
    for source in cfg.sources:
        yield from iter_documents(source, cfg, stats, cache_dir)


def split_key(doc: str, seed: int = 0) -> float:
    """A document's stable position in [0, 1): documents with ``split_key < val_fraction`` are held
    out. Usable one document at a time, so streamed corpora split exactly like in-memory ones."""
    digest = hashlib.sha256(f"{seed}\0".encode() + doc.encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_documents(docs: Iterable[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split into (train, val) by a stable hash of (seed, text), independent of order and of the
    process (unlike ``hash()``). Identical documents land on the same side, so duplicates never
    leak from train into val. With >= 2 documents and ``val_fraction > 0`` at least one document is
    held out, and never all of them."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction={val_fraction} must be in [0, 1)")
    docs = list(docs)
    keys = [split_key(d, seed) for d in docs]
    is_val = [k < val_fraction for k in keys]
    if len(docs) >= 2 and val_fraction > 0:
        if not any(is_val):
            is_val[min(range(len(docs)), key=keys.__getitem__)] = True
        if all(is_val):
            is_val[max(range(len(docs)), key=keys.__getitem__)] = False
    train = [d for d, v in zip(docs, is_val, strict=True) if not v]
    val = [d for d, v in zip(docs, is_val, strict=True) if v]
    return train, val
