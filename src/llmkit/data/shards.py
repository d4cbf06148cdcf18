"""Token shards: a corpus tokenized once into flat binary files read back through memory maps.

Layout of a shard directory::

    shard_00000.bin ...   token ids, little-endian uint16 (vocab <= 65536) or uint32, back to back
    index.json            {"version": 1, "dtype", "tokens", "documents", "bytes", "shards": [...],
                           "source", "tokenizer": <fingerprint>}

Every document is written as ``[bos] + ids``: BOS marks document boundaries, so the model learns
where a text starts, and no separator token is needed. Training reads random windows that may
cross document and shard boundaries (:meth:`TokenShards.window`). Memory maps keep RAM flat however
large the corpus is, and let DDP ranks share the page cache.

Writes are atomic: shards go into a temporary directory beside ``out_dir`` which is renamed into
place only when complete, so an interrupted run leaves the previous shards (or none), never a
half-written set that a resumed run would trust. ``index.json`` records the tokenizer's
fingerprint; reading with another tokenizer is refused.

Encoding is parallel: by default one process whose Rust ``encode_batch`` uses every core; with
``workers=N`` (N >= 2), N processes each encode whole batches and also share the Python-side work
(turning id lists into arrays), which dominates once the Rust side is fast.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import shutil
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from llmkit.errors import DataError
from llmkit.files import make_temp_dir

INDEX_VERSION = 1
_BATCH_CHARS = 4_000_000  # encode this many characters per parallel batch (bounded memory)
_BATCH_DOCS = 4096


def _batches(docs: Iterable[str], max_chars: int = _BATCH_CHARS) -> Iterator[list[str]]:
    batch, chars = [], 0
    for d in docs:
        if not d:
            continue
        batch.append(d)
        chars += len(d)
        if chars >= max_chars or len(batch) >= _BATCH_DOCS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian on every machine, so shards can be copied between hosts."""
    return np.dtype("<u2" if vocab_size <= 65536 else "<u4")


def _encode(tok, batch: list[str], dtype: np.dtype) -> tuple[np.ndarray, int, int]:
    """One batch -> (concatenated ``[bos] + ids`` of every document, documents, UTF-8 bytes)."""
    ids = tok.encode_batch(batch, bos=True)
    arr = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=sum(map(len, ids)))
    return arr, len(batch), sum(len(d.encode("utf-8", "replace")) for d in batch)


_worker: dict = {}


def _worker_init(tokenizer_json: str, bos_id: int, dtype: str) -> None:
    # Each worker encodes its batch on one thread: the processes are the parallelism.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer as _Inner

    class _Tok:
        inner = _Inner.from_str(tokenizer_json)

        def encode_batch(self, texts, bos=False):
            return [[bos_id, *e.ids] for e in self.inner.encode_batch_fast(texts, add_special_tokens=False)]

    _worker.update(tok=_Tok(), dtype=np.dtype(dtype))


def _worker_encode(batch: list[str]) -> tuple[np.ndarray, int, int]:
    return _encode(_worker["tok"], batch, _worker["dtype"])


def _encoded(docs: Iterable[str], tok, dtype: np.dtype, workers: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Encoded batches in document order; with ``workers >= 2`` at most 2 per worker in flight
    (bounded memory however long the corpus)."""
    if workers <= 1:
        for batch in _batches(docs):
            yield _encode(tok, batch, dtype)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    init = (tok.inner.to_str(), tok.bos_id, dtype.str)
    with mp.get_context(method).Pool(workers, initializer=_worker_init, initargs=init) as pool:
        pending: deque = deque()
        for batch in _batches(docs, _BATCH_CHARS // 8):  # smaller batches balance the processes
            pending.append(pool.apply_async(_worker_encode, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class _ShardWriter:
    """Appends token arrays, starting a new shard file every ``shard_tokens`` tokens."""

    def __init__(self, directory: Path, dtype: np.dtype, shard_tokens: int):
        self.dir, self.dtype, self.cap = directory, dtype, shard_tokens
        self.shards: list[dict] = []
        self.f = None

    def write(self, arr: np.ndarray) -> None:
        while arr.size:
            if self.f is None or self.shards[-1]["tokens"] >= self.cap:
                self._open()
            room = self.cap - self.shards[-1]["tokens"]
            part, arr = arr[:room], arr[room:]
            part.tofile(self.f)
            self.shards[-1]["tokens"] += int(part.size)

    def _open(self) -> None:
        self.close()
        name = f"shard_{len(self.shards):05d}.bin"
        self.f = open(self.dir / name, "wb")  # noqa: SIM115 (kept open across write() calls; close() ends it)
        self.shards.append({"file": name, "tokens": 0})

    def close(self) -> None:
        if self.f is not None:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            self.f = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(parent: Path, name: str) -> None:
    """Delete ``.<name>.tmp-<pid>-*`` / ``.<name>.old-<pid>`` left by processes that were killed
    mid-write (their pid is gone); directories of live writers are left alone."""
    for p in Path(parent).glob(f".{name}.*"):
        kind, _, rest = p.name[len(name) + 2 :].partition("-")
        pid = rest.split("-")[0]
        if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def write_shards(
    docs: Iterable[str],
    tok,
    out_dir: Path,
    source: str = "",
    shard_tokens: int = 50_000_000,
    workers: int = 0,
    show_progress: bool = True,
) -> dict:
    """Tokenize ``docs`` into ``out_dir`` (replacing it atomically) and return the index.

    ``workers``: 0 or 1 encodes in this process (Rust threads on all cores); N >= 2 uses N
    processes. The shards are identical either way."""
    from tqdm import tqdm

    if shard_tokens <= 0:
        raise DataError(f"shard_tokens={shard_tokens} must be positive")
    if workers < 0:
        raise DataError(f"workers={workers} must be 0 (this process) or a number of processes")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    dtype = _token_dtype(tok.vocab_size)
    remove_stale_temps(out_dir.parent, out_dir.name)
    tmp = make_temp_dir(out_dir.parent, f".{out_dir.name}.tmp-{os.getpid()}-")
    try:
        writer = _ShardWriter(tmp, dtype, shard_tokens)
        n_tokens = n_docs = n_bytes = 0
        bar = tqdm(
            desc=f"tokenizing {source or out_dir.name}",
            unit="B",
            unit_scale=True,
            disable=not show_progress,
            mininterval=1.0,
        )
        for arr, docs_in_batch, size in _encoded(docs, tok, dtype, workers):
            writer.write(arr)
            n_tokens, n_docs, n_bytes = n_tokens + arr.size, n_docs + docs_in_batch, n_bytes + size
            bar.update(size)
        bar.close()
        writer.close()
        index = {
            "version": INDEX_VERSION,
            "dtype": dtype.name,
            "tokens": int(n_tokens),
            "documents": n_docs,
            "bytes": n_bytes,
            "shards": writer.shards,
            "source": source,
            "tokenizer": tok.fingerprint(),
        }
        (tmp / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index


class TokenShards:
    """Read-only view of a shard directory as one long token sequence."""

    def __init__(self, directory: Path, expect_tokenizer: str | None = None):
        self.directory = Path(directory)
        path = self.directory / "index.json"
        if not path.is_file():
            raise DataError(
                f"{self.directory}: no token shards (index.json missing); "
                "run `llmkit data shard` or the pipeline to write them"
            )
        try:
            self.index: dict = json.loads(path.read_text(encoding="utf-8"))
            dtype = np.dtype(self.index["dtype"]).newbyteorder("<")
            shards = [(s["file"], int(s["tokens"])) for s in self.index["shards"]]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"{path}: corrupt shard index ({type(e).__name__}: {e}); delete {self.directory} and re-run"
            ) from None
        got = self.index.get("tokenizer")
        if expect_tokenizer is not None and got != expect_tokenizer:
            raise DataError(
                f"{self.directory} was tokenized with a different tokenizer ({got}, expected "
                f"{expect_tokenizer}); delete it and re-run"
            )
        self._maps: list[np.ndarray] = []
        for name, n in shards:
            f = self.directory / name
            if not f.is_file() or f.stat().st_size != n * dtype.itemsize:
                raise DataError(f"{f}: missing or truncated (expected {n} tokens); delete {self.directory} and re-run")
            self._maps.append(np.memmap(f, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype))
        self._starts = np.cumsum([0] + [len(m) for m in self._maps])  # (num_shards + 1,)
        self._len = int(self._starts[-1])

    def __len__(self) -> int:
        return self._len

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` as int64, stitched across shard boundaries."""
        start, length = int(start), int(length)
        if start < 0 or length < 0 or start + length > self._len:
            raise IndexError(f"window [{start}, {start + length}) is outside {self.directory} ({self._len} tokens)")
        out = np.empty(length, dtype=np.int64)
        k = int(np.searchsorted(self._starts, start, side="right")) - 1
        pos, filled = start, 0
        while filled < length:
            m = self._maps[k]
            off = pos - int(self._starts[k])
            take = min(length - filled, len(m) - off)
            out[filled : filled + take] = m[off : off + take]
            filled, pos, k = filled + take, pos + take, k + 1
        return out

    def __repr__(self) -> str:
        return f"TokenShards({str(self.directory)!r}, tokens={self._len:,}, shards={len(self._maps)})"
