"""Held-out bits per byte of a checkpoint, per document, and the paired difference of two models.

Shared by the benchmarks that train two models on differently prepared data (``bench_clean.py
--quality``, ``bench_tokenizer.py --model-effect``). Bits per byte do not depend on the tokenizer,
so models with different tokenizers are compared on the same text.
"""

from __future__ import annotations

import math
from pathlib import Path


def document_bits(checkpoint: Path, docs: list[str], seq_len: int = 256) -> list[float]:
    """Bits the checkpoint's model spends on each document (BOS first, windows of ``seq_len``)."""
    import torch

    import llmkit

    lm = llmkit.load(checkpoint, device="cpu")
    bits = []
    with torch.inference_mode():
        for d in docs:
            ids = [lm.tokenizer.bos_id, *lm.tokenizer.encode(d)]
            nats = 0.0
            for s in range(0, len(ids) - 1, seq_len):
                x = torch.tensor([ids[s : s + seq_len + 1]])
                logits = lm.model(x[:, :-1])  # (1, T, V)
                nats += torch.nn.functional.cross_entropy(logits[0], x[0, 1:], reduction="sum").item()
            bits.append(nats / math.log(2))
    return bits


def paired_difference(a: list[float], b: list[float], n_bytes: list[int]) -> tuple[float, float]:
    """Bits/byte of ``a`` minus ``b`` over the same documents, with its standard error.

    Bits/byte is a ratio (total bits / total bytes), so the error is the ratio estimator's:
    documents are the sampled unit, and their differences are paired (same text, two models).
    The error of one document is unknown: NaN."""
    total = sum(n_bytes)
    d = [x - y for x, y in zip(a, b, strict=True)]
    diff = sum(d) / total
    n = len(d)
    if n < 2:
        return diff, math.nan
    resid = sum((di - diff * bi) ** 2 for di, bi in zip(d, n_bytes, strict=True))
    return diff, math.sqrt(n / (n - 1) * resid) / total


def comparison_table(groups: dict[str, list[str]], bits: dict[str, dict[str, list[float]]], a: str, b: str) -> str:
    """Markdown: per group of documents, bits/byte of models ``a`` and ``b`` and ``b - a`` with its
    standard error. ``bits[model][group]`` lists per-document bits in the order of ``groups[group]``."""
    lines = [
        f"| held-out documents | documents | bytes | {a} | {b} | {b} minus {a} (standard error) |",
        "|---|---|---|---|---|---|",
    ]
    for name, docs in groups.items():
        nb = [len(d.encode("utf-8")) for d in docs]
        x, y = bits[a][name], bits[b][name]
        diff, se = paired_difference(y, x, nb)
        lines.append(
            f"| {name} | {len(docs)} | {sum(nb):,} | {sum(x) / sum(nb):.4f} | {sum(y) / sum(nb):.4f} | "
            f"{diff:+.4f} ({se:.4f}) |"
        )
    return "\n".join(lines)


def mostly_chinese(text: str) -> bool:
    """At least 30% of the characters are CJK ideographs (the speedrun corpora's documents are
    plainly one language or the other)."""
    return sum("\u4e00" <= c <= "\u9fff" for c in text) >= 0.3 * len(text)
