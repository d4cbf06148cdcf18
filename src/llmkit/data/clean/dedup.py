"""Exact and near-duplicate removal across every source (datasketch MinHash + LSH).

*Exact*: two documents are the same when their token sequences are (case, spacing and
punctuation ignored), compared by an 8-byte blake2b digest.

*Near*: each document gets a MinHash signature of its ``shingle_size``-token shingles (Chinese is
shingled in characters, other scripts in words: :mod:`llmkit.data.clean.tokens`). Documents that
share an LSH band are candidates, and a candidate is a duplicate when the signatures' estimated
Jaccard similarity is at least ``threshold``, so the banding's false positives are checked, not
trusted. Documents are visited in corpus order and compared with the documents kept so far: the
first copy is kept, every later copy removed, the same way whatever the number of processes that
computed the signatures.

Signatures are computed per document in the worker processes (:func:`signature`); the index
(:class:`NearDuplicateIndex`) lives in one process and holds ``num_perm`` 4-byte values per kept
document plus the LSH bands: about 1 KB a document with the defaults, 1 GB for a million. Beyond
that, run the datatrove engine, whose MinHash dedup sorts signatures on disk.
"""

from __future__ import annotations

import hashlib
from functools import cache

import numpy as np

from llmkit.data.clean.tokens import ngram_hashes

_SEED = 1
_SCHEME = "affine32"  # datasketch's 32-bit bijective permutations (its default since 2.0)


def exact_key(toks: list[str]) -> bytes:
    """The digest two documents share exactly when their token sequences are equal."""
    return hashlib.blake2b("\x1f".join(toks).encode("utf-8"), digest_size=8).digest()


def _identity(x):
    return x


@cache
def _minhash(num_perm: int):
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=_SEED, hashfunc=_identity, scheme=_SCHEME)


def signature(toks: list[str], shingle_size: int, num_perm: int) -> np.ndarray:
    """The MinHash signature of a document's shingles. ``(num_perm,) uint32``"""
    shingles = ngram_hashes(toks, shingle_size) >> np.uint64(32)  # (S,) 32-bit shingle hashes
    m = _minhash(num_perm)  # one per process: its permutations take longer to make than to apply
    m.clear()
    if shingles.size:
        m.update_batch(np.unique(shingles).tolist())
    return m.hashvalues.astype(np.uint32)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures (the share of equal MinHash values)."""
    return float(np.mean(a == b))


class NearDuplicateIndex:
    """Signatures of the documents kept so far, banded for LSH (one process, in corpus order)."""

    def __init__(self, threshold: float, num_perm: int):
        from datasketch import MinHashLSH

        self.threshold, self.num_perm = threshold, num_perm
        # Candidates are verified against the threshold, so the banding may err towards recall:
        # datasketch's default (equal weights) finds only 44% of pairs at exactly J = 0.7 (14 bands
        # of 9 rows); weights (0.1, 0.9) choose 20 bands of 6 rows and find 92%, and 98% at J = 0.75.
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
        self.kept: dict[int, np.ndarray] = {}

    def _minhash(self, sig: np.ndarray):
        from datasketch import LeanMinHash

        return LeanMinHash(seed=_SEED, hashvalues=sig, scheme=_SCHEME)

    def add(self, key: int, sig: np.ndarray) -> int | None:
        """Keep document ``key`` unless it duplicates a kept one; return that one's key if so."""
        m = self._minhash(sig)
        best, best_sim = None, self.threshold
        for other in self.lsh.query(m):
            sim = jaccard(sig, self.kept[other])
            if sim >= best_sim:
                best, best_sim = other, sim
        if best is not None:
            return best
        self.lsh.insert(key, m, check_duplication=False)
        self.kept[key] = sig
        return None
