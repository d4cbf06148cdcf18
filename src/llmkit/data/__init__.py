"""Data: text sources and offline corpora -> documents -> train/val split -> token shards.

``sources`` turns a corpus name, path, glob, JSONL/Parquet file, saved ``datasets`` directory or
``hf:NAME`` into documents; ``corpora`` fetches the offline corpora; ``shards`` writes and reads
the tokenized corpus. See docs/data.md.
"""

from llmkit.data.corpora import corpus_names, fetch_corpus
from llmkit.data.shards import TokenShards, write_shards
from llmkit.data.sources import SourceStats, iter_corpus, iter_documents, split_documents

__all__ = [
    "SourceStats",
    "TokenShards",
    "corpus_names",
    "fetch_corpus",
    "iter_corpus",
    "iter_documents",
    "split_documents",
    "write_shards",
]
