"""Weighted mixing: how many times each source's documents appear in the cleaned corpus.

A source's *epochs* is a number >= 0: ``2`` writes every document twice, ``1`` once, ``0.5``
a fixed half of them (chosen by a hash of the text, so the same half on every run and machine),
``0`` none. :func:`epochs_for_weights` turns target *weights* (each source's share of the mixed
corpus, in bytes) into epochs, given each source's cleaned size: upweighting a small, valuable
source repeats it, downweighting a large one subsamples it.
"""

from __future__ import annotations

import hashlib
import math

from llmkit.errors import ConfigError


def copies(text: str, epochs: float, seed: int = 0) -> int:
    """How many times to write one document under ``epochs`` (deterministic per text)."""
    whole = math.floor(epochs)
    frac = epochs - whole
    if frac <= 0:
        return whole
    digest = hashlib.blake2b(f"mix{seed}\0{text}".encode(), digest_size=8).digest()
    return whole + (int.from_bytes(digest, "big") / 2**64 < frac)


def epochs_for_weights(sizes: dict[str, int], weights: dict[str, float], total: int | None = None) -> dict[str, float]:
    """Epochs per source so that source ``s`` is ``weights[s] / sum(weights)`` of the mixed bytes.

    ``total`` is the mixed corpus's size in bytes (default: the sum of ``sizes``, so the mix is
    as large as the cleaned corpus). Sources missing from ``weights`` get weight 0."""
    unknown = sorted(set(weights) - set(sizes))
    if unknown:
        raise ConfigError(f"clean.mix_weights: unknown source {unknown[0]!r}; sources: {', '.join(sizes)}")
    if any(w < 0 for w in weights.values()) or not sum(weights.values()):
        raise ConfigError("clean.mix_weights: weights must be >= 0 and not all 0")
    total = sum(sizes.values()) if total is None else total
    norm = sum(weights.values())
    return {s: (weights.get(s, 0.0) / norm * total / size if size else 0.0) for s, size in sizes.items()}
