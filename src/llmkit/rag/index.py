"""Build, update and search a retrieval index over a user's documents.

``update_index(root, paths, settings)`` makes the index hold the current content of ``paths``:
files seen for the first time are added, files whose bytes changed are re-read, files that
disappeared from a named directory are dropped, and unchanged files are kept as they are (their
vectors are reused, not recomputed). The result equals a full rebuild: chunks are kept in one
canonical order (file name, then position) and BM25 is recomputed over all of them (cheap; only
embedding is expensive), so an updated index returns what a rebuilt one returns.

``RagIndex.open(root)`` reads the live version and searches it with BM25, dense vectors (FAISS,
exact inner product on unit vectors) or both fused by reciprocal rank, optionally reranked. The
embedder is loaded on the first dense search, so keyword-only use starts fast.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from llmkit.console import say
from llmkit.errors import ConfigError, DataError
from llmkit.rag import store
from llmkit.rag.bm25 import CHINESE_MODES, DEFAULT_CHINESE, BM25Index
from llmkit.rag.chunking import Chunk, ChunkingConfig, TokenCounter, chunk_document
from llmkit.rag.embed import DEFAULT_EMBEDDER, Embedder, resolve_embedder
from llmkit.rag.language import covers
from llmkit.rag.loaders import SUFFIXES, find_files, load_file

RETRIEVERS = ("bm25", "dense")
MODES = ("hybrid", "bm25", "dense")
RRF_K = 60
"""Reciprocal rank fusion constant (Cormack et al. 2009): a hit's fused score is sum 1/(RRF_K + rank)."""


@dataclass
class IndexSettings:
    """What an index is built with; all of it is recorded in the manifest, and an update with
    different settings is refused (it would mix two indexes) unless asked to rebuild."""

    retrievers: list[str] = field(default_factory=lambda: list(RETRIEVERS))
    """Which retrievers to build: bm25, dense, or both (hybrid search needs both)."""
    embedder: str = DEFAULT_EMBEDDER
    """Embedding model: ``minilm`` (the packaged all-MiniLM-L6-v2) or a model directory."""
    chinese: str = DEFAULT_CHINESE
    """How BM25 segments Chinese: ``bigram`` or ``jieba``."""
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    text_field: str = "text"
    """Field holding the text in JSONL files."""

    def validate(self) -> IndexSettings:
        bad = [r for r in self.retrievers if r not in RETRIEVERS]
        if bad or not self.retrievers:
            raise ConfigError(f"retrievers {bad or '(none)'}: choose from {', '.join(RETRIEVERS)}")
        if self.chinese not in CHINESE_MODES:
            raise ConfigError(f"chinese segmentation {self.chinese!r}: use one of {', '.join(CHINESE_MODES)}")
        self.chunking.validate()
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["retrievers"] = sorted(self.retrievers)
        return d


@dataclass
class Hit:
    """One retrieved chunk. ``score`` is the ranking score of the mode used (BM25, cosine, fused,
    or reranker); ``ranks`` holds each retriever's 1-based rank for it."""

    chunk: Chunk
    score: float
    ranks: dict[str, int] = field(default_factory=dict)


@dataclass
class UpdateSummary:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    empty: list[str] = field(default_factory=list)
    skipped: int = 0
    chunks: int = 0
    embedded: int = 0
    bytes_read: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed, "
            f"{self.unchanged} unchanged; {self.chunks} chunks ({self.embedded} embedded) in {self.seconds:.1f} s"
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _chunk_tokenizer(settings: IndexSettings) -> Path:
    """Chunks are counted in the embedder's tokens (a chunk then fits its window); a BM25-only
    index uses the default embedder's tokenizer, so token sizes mean the same everywhere."""
    if "dense" in settings.retrievers:
        return resolve_embedder(settings.embedder)
    return resolve_embedder(DEFAULT_EMBEDDER)


def _same_settings(manifest: dict, settings: IndexSettings, root: Path) -> None:
    old = manifest["settings"]
    new = settings.to_dict()
    for key in ("retrievers", "embedder", "chinese", "chunking", "text_field"):
        if old.get(key) != new.get(key):
            raise ConfigError(
                f"{root} was built with {key}={old.get(key)!r}, not {new.get(key)!r}; pass the same settings "
                f"to update it, or --rebuild to index everything again with the new ones"
            )


def update_index(
    root: Path,
    paths: list[Path],
    settings: IndexSettings | None = None,
    *,
    rebuild: bool = False,
    skip_unreadable: bool = False,
    device: str = "cpu",
    embedder: Embedder | None = None,
) -> UpdateSummary:
    """Bring the index at ``root`` up to date with the files under ``paths`` (see module doc).
    ``settings`` default to those of the existing index, or the defaults for a new one."""
    root = Path(root)
    t0 = time.perf_counter()
    summary = UpdateSummary()
    live = store.current_version(root) if root.exists() else None
    manifest = store.read_manifest(live) if live is not None and not rebuild else None
    if settings is None:
        settings = settings_of(manifest) if manifest else IndexSettings()
    settings.validate()
    if manifest is not None:
        _same_settings(manifest, settings, root)

    found, skipped = find_files(paths)
    summary.skipped = len(skipped)
    names = [n for _, n in found]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataError(f"two files are both named {sorted(dup)[0]!r}; index them separately or rename one")
    if not found and manifest is None:
        kinds = ", ".join(s.lstrip(".") for s in SUFFIXES)
        raise DataError(f"no {kinds} files under {', '.join(map(str, paths))}; point at your documents")

    old_files: dict = manifest["files"] if manifest else {}
    old_chunks = _read_chunks(live) if manifest else []
    counter = TokenCounter(_chunk_tokenizer(settings))

    # which files changed, and the chunks of those that did
    files: dict[str, dict] = {}
    new_chunks: list[Chunk] = []
    for path, name in found:
        digest = _sha256(path)
        size = path.stat().st_size
        if name in old_files and old_files[name]["sha256"] == digest:
            files[name] = old_files[name]
            summary.unchanged += 1
            continue
        (summary.changed if name in old_files else summary.added).append(name)
        summary.bytes_read += size
        try:
            docs = load_file(path, name, settings.text_field)
        except DataError as e:
            if not skip_unreadable:
                raise DataError(f"{e} (or pass --skip-unreadable to index the other files)") from None
            say(f"rag: skipped {e}")
            (summary.changed if name in old_files else summary.added).remove(name)
            continue
        chunks = [c for d in docs for c in chunk_document(d, counter, settings.chunking)]
        if not chunks:
            summary.empty.append(name)
        files[name] = {"sha256": digest, "bytes": size, "documents": len(docs), "chunks": len(chunks)}
        new_chunks += chunks

    # files indexed before but gone from a named directory (or a named file that vanished)
    roots = [Path(p) for p in paths]
    for name in old_files:
        if name in files:
            continue
        top = name.split("/", 1)[0]
        under_named_dir = any(r.is_dir() and r.name == top and "/" in name for r in roots)
        named_file = any(not r.exists() and r.name == name for r in roots)
        if under_named_dir or named_file:
            summary.removed.append(name)
        else:
            files[name] = old_files[name]
    replaced = set(summary.changed) | set(summary.removed)
    kept = [(c, i) for i, c in enumerate(old_chunks) if _file_of(c) not in replaced]
    _write_version(root, settings, files, kept, new_chunks, live, summary, device, embedder)
    summary.seconds = time.perf_counter() - t0
    return summary


def remove_from_index(root: Path, names: list[str]) -> UpdateSummary:
    """Drop files (by the names the index shows) from the index."""
    root = Path(root)
    t0 = time.perf_counter()
    live = store.current_version(root) if root.exists() else None
    if live is None:
        raise DataError(f"{root}: no index here; build one with `llmkit rag index DOCS --out {root}`")
    manifest = store.read_manifest(live)
    missing = [n for n in names if n not in manifest["files"]]
    if missing:
        known = ", ".join(sorted(manifest["files"])[:5]) + (", ..." if len(manifest["files"]) > 5 else "")
        raise DataError(f"{missing[0]!r} is not in {root} (it holds {known}); use the names `rag info` lists")
    settings = settings_of(manifest)
    files = {n: f for n, f in manifest["files"].items() if n not in names}
    kept = [(c, i) for i, c in enumerate(_read_chunks(live)) if _file_of(c) not in names]
    summary = UpdateSummary(removed=list(names), unchanged=len(files))
    _write_version(root, settings, files, kept, [], live, summary, "cpu", None)
    summary.seconds = time.perf_counter() - t0
    return summary


def _file_of(chunk: Chunk) -> str:
    return chunk.source.split("#", 1)[0]


def settings_of(manifest: dict) -> IndexSettings:
    s = dict(manifest["settings"])
    s["chunking"] = ChunkingConfig(**s["chunking"])
    return IndexSettings(**s)


def _write_version(
    root: Path,
    settings: IndexSettings,
    files: dict,
    kept: list[tuple[Chunk, int]],
    new_chunks: list[Chunk],
    live: Path | None,
    summary: UpdateSummary,
    device: str,
    embedder: Embedder | None,
) -> None:
    """Assemble kept + new chunks in canonical order, embed only the new ones, write a version."""
    entries = [(c, ("old", i)) for c, i in kept] + [(c, ("new", j)) for j, c in enumerate(new_chunks)]
    entries.sort(key=lambda e: (_file_of(e[0]), _record_of(e[0]), e[0].start, e[0].end))
    chunks = [c for c, _ in entries]
    summary.chunks = len(chunks)
    if not chunks:
        raise DataError("no text to index: every file is empty (a scanned PDF needs OCR first)")
    vectors = embedder_info = None
    if "dense" in settings.retrievers:
        if embedder is None and new_chunks:
            embedder = Embedder(settings.embedder, device=device)
        embedder_info = embedder.describe() if embedder is not None else store.read_manifest(live)["embedder"]
        old_vectors = _read_vectors(live) if kept else None
        new_vectors = _embed(embedder, [c.indexed_text for c in new_chunks]) if new_chunks else None
        summary.embedded = len(new_chunks)
        vectors = np.zeros((len(chunks), embedder_info["dim"]), dtype=np.float32)  # (N, dim)
        for row, (_, (origin, i)) in enumerate(entries):
            vectors[row] = old_vectors[i] if origin == "old" else new_vectors[i]
    with store.writing(root) as staging:
        with open(staging / "chunks.jsonl", "w", encoding="utf-8") as f:
            for c in chunks:
                f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
        if "bm25" in settings.retrievers:
            BM25Index(settings.chinese).build([c.indexed_text for c in chunks]).save(staging / "bm25")
        if vectors is not None:
            import faiss

            index = faiss.IndexFlatIP(vectors.shape[1])
            index.add(vectors)
            faiss.write_index(index, str(staging / "dense.faiss"))
        manifest = {
            "format": store.FORMAT,
            "settings": settings.to_dict(),
            "embedder": embedder_info,
            "chunk_tokenizer": "embedder" if "dense" in settings.retrievers else DEFAULT_EMBEDDER,
            "chunks": len(chunks),
            "files": dict(sorted(files.items())),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
        store.publish(root, staging)


def _record_of(chunk: Chunk) -> int:
    _, _, rec = chunk.source.partition("#")
    return int(rec) if rec.isdigit() else 0


def _embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    say(f"rag: embedding {len(texts)} chunks with {embedder.name}")
    return embedder.embed(texts, progress=len(texts) > 256)


def _read_chunks(version: Path) -> list[Chunk]:
    with open(version / "chunks.jsonl", encoding="utf-8") as f:
        return [Chunk(**json.loads(line)) for line in f]


def _read_vectors(version: Path | None) -> np.ndarray | None:
    if version is None or not (version / "dense.faiss").is_file():
        return None
    import faiss

    index = faiss.read_index(str(version / "dense.faiss"))
    return index.reconstruct_n(0, index.ntotal)  # (N, dim)


class RagIndex:
    """A live index version in memory, ready to search."""

    def __init__(self, root: Path, version: Path, manifest: dict, device: str = "cpu"):
        self.root, self.version, self.manifest, self.device = root, version, manifest, device
        self.settings = settings_of(manifest)
        self.chunks = _read_chunks(version)
        self.bm25 = None
        if "bm25" in self.settings.retrievers:
            self.bm25 = BM25Index.load(version / "bm25", self.settings.chinese, len(self.chunks))
        self.dense = None
        if "dense" in self.settings.retrievers:
            import faiss

            self.dense = faiss.read_index(str(version / "dense.faiss"))
        self._embedder: Embedder | None = None
        self._query_vectors: dict[str, np.ndarray] = {}  # hybrid and dense search of one question embed it once

    @classmethod
    def open(cls, root: str | Path, device: str = "cpu", embedder: Embedder | None = None) -> RagIndex:
        """Open the index at ``root``; ``embedder`` (already loaded) must be the one it was built with."""
        root = Path(root)
        live = store.current_version(root) if root.is_dir() else None
        if live is None:
            raise DataError(f"{root}: no index here; build one with `llmkit rag index DOCS --out {root}`")
        index = cls(root, live, store.read_manifest(live), device)
        if embedder is not None:
            index.use_embedder(embedder)
        return index

    def use_embedder(self, embedder: Embedder) -> None:
        built = self.manifest.get("embedder") or {}
        if built and embedder.fingerprint != built.get("fingerprint"):
            raise ConfigError(
                f"{self.root} was built with embedder {built.get('name')} ({built.get('fingerprint')}), "
                f"not {embedder.name} ({embedder.fingerprint}); search it with that embedder, or rebuild it: "
                f"llmkit rag index DOCS --out {self.root} --rebuild --embedder {embedder.name}"
            )
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            built = self.manifest["embedder"]
            try:
                embedder = Embedder(built["name"], device=self.device)
            except ConfigError as e:
                raise ConfigError(f"{self.root}: cannot load the embedder it was built with ({e})") from None
            self.use_embedder(embedder)
        return self._embedder

    @property
    def modes(self) -> list[str]:
        """Search modes this index supports."""
        have = set(self.settings.retrievers)
        return [m for m in MODES if (m == "hybrid" and have == set(RETRIEVERS)) or m in have]

    def search(self, query: str, k: int = 5, mode: str = "hybrid", reranker=None, depth: int = 50) -> list[Hit]:
        """The ``k`` best chunks for ``query``. ``depth``: candidates each retriever contributes to
        fusion and to the reranker."""
        if mode not in self.modes:
            raise ConfigError(f"search mode {mode!r}: this index supports {', '.join(self.modes)}")
        if not query.strip():
            raise DataError("the question is empty; ask something")
        depth = max(depth, k)
        ranked: dict[str, list[tuple[int, float]]] = {}
        if mode in ("bm25", "hybrid"):
            rows, scores = self.bm25.search(query, depth)
            ranked["bm25"] = list(zip(rows.tolist(), scores.tolist(), strict=True))
        if mode == "dense" or (mode == "hybrid" and self.dense_reads(query)):
            ranked["dense"] = self._dense_search(query, depth)
        if mode == "hybrid":
            fused: dict[int, float] = {}
            for results in ranked.values():
                for rank, (row, _) in enumerate(results, 1):
                    fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank)
            order = sorted(fused.items(), key=lambda x: (-x[1], x[0]))
        else:
            order = ranked[mode]
        ranks = {name: {row: r for r, (row, _) in enumerate(res, 1)} for name, res in ranked.items()}
        hits = [
            Hit(self.chunks[row], float(score), {n: rk[row] for n, rk in ranks.items() if row in rk})
            for row, score in order[: depth if reranker else k]
        ]
        if reranker is not None:
            hits = reranker.rerank(query, hits)
        return hits[:k]

    def clear_cache(self) -> None:
        """Forget the query vectors kept so far (benchmarks time the embedding too)."""
        self._query_vectors.clear()

    def dense_reads(self, query: str) -> bool:
        """Whether hybrid search uses the dense retriever for ``query``: not when the query is in a
        CJK script the embedder's model card does not list (see :mod:`llmkit.rag.language`)."""
        return covers((self.manifest.get("embedder") or {}).get("languages"), query)

    def _dense_search(self, query: str, depth: int) -> list[tuple[int, float]]:
        if self.dense.ntotal == 0:
            return []
        q = self._query_vectors.get(query)
        if q is None:
            if len(self._query_vectors) >= 1024:
                self._query_vectors.clear()
            q = self._query_vectors[query] = self.embedder.embed([query])  # (1, dim)
        scores, rows = self.dense.search(q, min(depth, self.dense.ntotal))  # (1, depth) each
        pairs = [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]
        return sorted(pairs, key=lambda x: (-x[1], x[0]))  # ties by row: the same order every time
