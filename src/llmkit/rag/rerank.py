"""Optional second stage: a cross-encoder reads question and chunk together and rescores the
first stage's candidates.

A cross-encoder is a Hugging Face sequence-classification model directory (for example a
sentence-transformers ``CrossEncoder`` such as ms-marco-MiniLM): one logit per (question, chunk)
pair, higher is more relevant. It sees both texts at once, so it judges relevance better than
vectors compared from afar, at the price of one forward pass per candidate; hence it only
reorders the top ``depth`` candidates of BM25, dense or hybrid search.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from llmkit.errors import ConfigError


class Reranker:
    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 16, max_tokens: int = 512):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path}: not a reranker model directory (no config.json)")
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        except (OSError, ValueError, KeyError) as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
            raise ConfigError(f"{path}: cannot load as a cross-encoder ({reason})") from None
        if self.model.config.num_labels != 1:
            raise ConfigError(
                f"{path}: a reranker has one output (relevance); this model has {self.model.config.num_labels}"
            )
        self.path, self.device, self.batch_size = path, device, batch_size
        self.max_tokens = min(max_tokens, getattr(self.model.config, "max_position_embeddings", max_tokens))

    @torch.inference_mode()
    def scores(self, query: str, texts: list[str]) -> list[float]:
        out: list[float] = []
        for b in range(0, len(texts), self.batch_size):
            batch = texts[b : b + self.batch_size]
            enc = self.tokenizer(
                [query] * len(batch),
                batch,
                padding=True,
                truncation="only_second",
                max_length=self.max_tokens,
                return_tensors="pt",
            ).to(self.device)
            out += self.model(**enc).logits[:, 0].float().tolist()  # (B,)
        return out

    def rerank(self, query: str, hits: list) -> list:
        """``hits`` reordered by the cross-encoder's score (which replaces ``score``)."""
        if not hits:
            return hits
        scores = self.scores(query, [h.chunk.indexed_text for h in hits])
        order = sorted(range(len(hits)), key=lambda i: -scores[i])
        return [replace(hits[i], score=scores[i], ranks={**hits[i].ranks, "rerank": r}) for r, i in enumerate(order, 1)]
