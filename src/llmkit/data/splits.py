"""A run's documents split into training and validation, one source at a time.

Local files and named corpora are read into memory once and split with :func:`split_documents`
(which guarantees a held-out document even for tiny corpora). With ``data.streaming`` no source
is held in memory (hub datasets are streamed too): each pass re-reads them and routes every document by
:func:`split_key`, the same hash ``split_documents`` uses, so both paths split alike. Validation
documents are kept per source, so evaluation can report each one separately.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from llmkit.config import DataConfig
from llmkit.data.sources import SourceStats, iter_documents, split_documents, split_key


def source_label(source: str) -> str:
    """A short, filesystem-safe name for a source (``shakespeare``, ``notes``, ``d.jsonl``)."""
    label = re.sub(r"[^0-9A-Za-z_.-]+", "_", Path(source.rstrip("/")).name or source).strip("_.")
    return label or "source"


class SplitCorpus:
    def __init__(self, cfg: DataConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        self.stats = {s: SourceStats() for s in cfg.sources}
        self.counts = {s: [0, 0] for s in cfg.sources}  # source -> [train docs, val docs]
        self.val: dict[str, list[str]] = {}
        self._in_memory: dict[str, list[str]] = {}
        for source in cfg.sources:
            if self.is_streamed(source):
                continue
            docs = list(iter_documents(source, cfg, self.stats[source]))
            train, val = split_documents(docs, cfg.val_fraction, seed=seed)
            self._in_memory[source] = train
            self.counts[source] = [len(train), len(val)]
            if val:
                self.val[source_label(source)] = val

    def is_streamed(self, source: str) -> bool:
        return self.cfg.streaming

    def train_documents(self, collect_validation: bool = False) -> Iterator[str]:
        """Every training document, in source order. With ``collect_validation`` the streamed
        sources' held-out documents are gathered into ``self.val`` (and counted) on the way."""
        for source in self.cfg.sources:
            if source in self._in_memory:
                yield from self._in_memory[source]
                continue
            stats = self.stats[source] if collect_validation else SourceStats()
            label = source_label(source)
            for doc in iter_documents(source, self.cfg, stats):
                if split_key(doc, self.seed) < self.cfg.val_fraction:
                    if collect_validation:
                        self.val.setdefault(label, []).append(doc)
                        self.counts[source][1] += 1
                    continue
                if collect_validation:
                    self.counts[source][0] += 1
                yield doc

    def summary(self) -> dict[str, dict]:
        """Per source: documents, chars, bytes, train/val documents (after a collecting pass)."""
        return {
            s: {
                "documents": st.documents,
                "chars": st.chars,
                "bytes": st.bytes,
                "train_documents": self.counts[s][0],
                "val_documents": self.counts[s][1],
            }
            for s, st in self.stats.items()
        }

    def warnings(self) -> list[str]:
        return [f"{s}: {w}" for s, st in self.stats.items() for w in st.warnings()]
