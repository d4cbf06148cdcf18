"""Retrieval benchmark: llmkit's BM25, dense and hybrid search against a plain FAISS +
sentence-transformers baseline, on English and Chinese documents with planted facts.

Documents: Shakespeare (English) and fortunes-zh (Chinese) filler with the facts of
tests/data/rag/facts.jsonl planted at seeded places. Question sets per language: the facts'
paraphrased questions (``facts``) and questions generated from the indexed chunks (``generated``).

The baseline is what a tutorial builds: fixed 1000-character windows with 200 characters of
overlap, embedded by ``SentenceTransformer.encode`` (the same all-MiniLM-L6-v2), searched in a
``faiss.IndexFlatIP``. Relevance is the same rule for every system (the chunk contains the answer).

    python benchmarks/bench_rag.py [--en-chars 60000 --zh-chars 30000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from llmkit.rag.chunking import Chunk
from llmkit.rag.embed import Embedder
from llmkit.rag.evaluate import Question, evaluate, generate_questions, is_relevant
from llmkit.rag.index import IndexSettings, RagIndex, update_index
from rag_data import write_planted


class Baseline:
    """Fixed character windows + SentenceTransformer + FAISS inner product."""

    def __init__(self, docs: Path, model_dir: Path, size: int = 1000, overlap: int = 200):
        import faiss
        from sentence_transformers import SentenceTransformer

        t0 = time.perf_counter()
        self.chunks: list[Chunk] = []
        for f in sorted(docs.iterdir()):
            text = f.read_text(encoding="utf-8")
            for start in range(0, max(1, len(text) - overlap), size - overlap):
                piece = text[start : start + size]
                self.chunks.append(Chunk(f"{docs.name}/{f.name}", start, start + len(piece), piece, "", 0, 0, 0))
        self.model = SentenceTransformer(str(model_dir), device="cpu")
        vectors = self.model.encode([c.text for c in self.chunks], normalize_embeddings=True, batch_size=32)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.asarray(vectors, dtype=np.float32))
        self.build_seconds = time.perf_counter() - t0

    def search(self, query: str, k: int = 5, mode: str = "baseline", reranker=None):
        from llmkit.rag.index import Hit

        q = self.model.encode([query], normalize_embeddings=True)
        scores, rows = self.index.search(np.asarray(q, dtype=np.float32), k)
        return [Hit(self.chunks[r], float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]


def latency(search, queries: list[str], mode: str, before=lambda: None) -> tuple[float, float]:
    times = []
    for q in queries:
        before()
        t0 = time.perf_counter()
        search(q, 5, mode)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--en-chars", type=int, default=60000)
    ap.add_argument("--zh-chars", type=int, default=30000)
    ap.add_argument("--generated", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rag-"))
    embedder = Embedder()
    rows_quality, rows_speed = [], []
    try:
        for lang, chars in (("en", args.en_chars), ("zh", args.zh_chars)):
            docs = work / lang / "docs"
            planted = write_planted(docs, lang, chars, files=4)
            size_mb = sum(f.stat().st_size for f in docs.iterdir()) / 1e6
            indexes = {}
            variants = [("bm25", IndexSettings(retrievers=["bm25"]))]
            if lang == "zh":
                variants.append(("bm25-jieba", IndexSettings(retrievers=["bm25"], chinese="jieba")))
            variants.append(("llmkit", IndexSettings()))
            for name, settings in variants:
                t0 = time.perf_counter()
                update_index(work / lang / name, [docs], settings, embedder=embedder)
                seconds = time.perf_counter() - t0
                indexes[name] = RagIndex.open(work / lang / name, embedder=embedder)
                rows_speed.append((lang, f"index {name}", f"{size_mb / seconds:.3f} MB/s", f"{seconds:.1f} s"))
            base = Baseline(docs, embedder.path)
            rows_speed.append(
                (
                    lang,
                    "index baseline (FAISS + ST)",
                    f"{size_mb / base.build_seconds:.3f} MB/s",
                    f"{base.build_seconds:.1f} s",
                )
            )
            main_index = indexes["llmkit"]
            sets = {
                "facts": [Question(r["question"], r["answer"]) for r in planted],
                "generated": generate_questions(main_index.chunks, args.generated, seed=0),
            }
            for set_name, qs in sets.items():
                systems = [(main_index, m) for m in ("bm25", "dense", "hybrid")]
                if "bm25-jieba" in indexes:
                    systems.append((indexes["bm25-jieba"], "bm25"))
                systems.append((base, "baseline"))
                for system, mode in systems:
                    label = "bm25 (jieba)" if system is indexes.get("bm25-jieba") else mode
                    r = evaluate(system, qs, [mode], ks=(1, 5, 10))[mode]
                    rows_quality.append(
                        (lang, set_name, label, r["recall@1"], r["recall@5"], r["recall@10"], r["mrr"], r["n"])
                    )
            queries = [q.question for q in sets["generated"][:100]]
            for mode in ("bm25", "dense", "hybrid"):
                p50, p99 = latency(main_index.search, queries, mode, before=main_index.clear_cache)
                rows_speed.append((lang, f"query {mode}", f"p50 {p50:.1f} ms", f"p99 {p99:.1f} ms"))
            p50, p99 = latency(base.search, queries, "baseline")
            rows_speed.append((lang, "query baseline", f"p50 {p50:.1f} ms", f"p99 {p99:.1f} ms"))
            hits = sum(any(is_relevant(c, q) for c in base.chunks) for q in sets["facts"])
            print(f"[{lang}] {size_mb:.3f} MB, {len(main_index.chunks)} llmkit chunks, {len(base.chunks)} baseline "
                  f"chunks; baseline chunks hold {hits}/{len(sets['facts'])} facts whole", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| lang | questions | retriever | recall@1 | recall@5 | recall@10 | MRR@10 | n |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows_quality:
        print("| " + " | ".join(str(x) for x in row) + " |")
    print("\n| lang | what | rate / p50 | time / p99 |")
    print("|---|---|---|---|")
    for row in rows_speed:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
