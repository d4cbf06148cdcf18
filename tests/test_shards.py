"""Token shards: round trip, windows across shard boundaries, dtypes, tokenizer mismatch, atomicity."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from llmkit.data.shards import TokenShards, write_shards
from llmkit.errors import DataError
from llmkit.tokenizer import Tokenizer

DOCS = [
    "To be, or not to be, that is the question.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "We trained 2 models in 2024 😀",
    "",
    "人工智能 and machine learning 一起学习。",
] * 7


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([d * 20 for d in DOCS[:5]], vocab_size=320, show_progress=False)


def expected_stream(tok, docs) -> list[int]:
    return [i for d in docs if d for i in tok.encode(d, bos=True)]


def test_round_trip_across_shard_boundaries(tok, tmp_path):
    index = write_shards(DOCS, tok, tmp_path / "s", source="unit", shard_tokens=50, show_progress=False)
    stream = expected_stream(tok, DOCS)
    assert index["tokens"] == len(stream) and index["documents"] == 28  # empty documents are skipped
    assert index["bytes"] == sum(len(d.encode()) for d in DOCS)
    assert index["dtype"] == "uint16" and index["source"] == "unit" and index["tokenizer"] == tok.fingerprint()
    assert len(index["shards"]) == -(-len(stream) // 50)
    assert all(s["tokens"] == 50 for s in index["shards"][:-1])
    assert json.loads((tmp_path / "s" / "index.json").read_text(encoding="utf-8")) == index

    shards = TokenShards(tmp_path / "s", expect_tokenizer=tok.fingerprint())
    assert len(shards) == len(stream)
    assert shards.window(0, len(stream)).tolist() == stream
    w = shards.window(45, 12)  # spans shard_00000 and shard_00001
    assert w.dtype == np.int64 and w.tolist() == stream[45:57]
    assert shards.window(30, 130).tolist() == stream[30:160]  # spans three shards
    assert shards.window(len(stream) - 3, 3).tolist() == stream[-3:]
    assert shards.window(7, 0).tolist() == []
    with pytest.raises(IndexError):
        shards.window(len(stream) - 2, 3)
    text = tok.decode(shards.window(0, len(stream)))
    assert text == "".join("<|bos|>" + d for d in DOCS if d)


def test_dtype_follows_vocab_size(tok, tmp_path):
    class Big:  # the same tokens from a tokenizer whose vocabulary needs 32-bit ids
        vocab_size = 70_000

        def __getattr__(self, name):
            return getattr(tok, name)

    index = write_shards(DOCS, Big(), tmp_path / "big", show_progress=False)
    assert index["dtype"] == "uint32"
    assert (tmp_path / "big" / "shard_00000.bin").stat().st_size == 4 * index["tokens"]
    assert TokenShards(tmp_path / "big").window(0, index["tokens"]).tolist() == expected_stream(tok, DOCS)
    small = write_shards(DOCS, tok, tmp_path / "small", show_progress=False)
    assert (tmp_path / "small" / "shard_00000.bin").stat().st_size == 2 * small["tokens"]


def test_shards_are_little_endian_files(tok, tmp_path):
    write_shards(DOCS, tok, tmp_path / "s", shard_tokens=60, show_progress=False)
    raw = np.concatenate([np.fromfile(f, dtype="<u2") for f in sorted((tmp_path / "s").glob("shard_*.bin"))])
    assert raw.tolist() == expected_stream(tok, DOCS)


def test_worker_processes_write_identical_shards(tok, tmp_path, monkeypatch):
    import llmkit.data.shards as shards_mod

    monkeypatch.setattr(shards_mod, "_BATCH_CHARS", 800)  # many small batches across 2 processes
    docs = DOCS * 10
    a = write_shards(docs, tok, tmp_path / "one", shard_tokens=500, show_progress=False)
    b = write_shards(docs, tok, tmp_path / "two", shard_tokens=500, workers=2, show_progress=False)
    assert dict(a.items()) == b
    assert TokenShards(tmp_path / "two").window(0, b["tokens"]).tolist() == expected_stream(tok, docs)
    with pytest.raises(DataError, match=r"workers=-1"):
        write_shards(docs, tok, tmp_path / "bad", workers=-1, show_progress=False)


def test_fingerprint_mismatch_is_refused(tok, tmp_path):
    write_shards(DOCS, tok, tmp_path / "s", show_progress=False)
    other = Tokenizer.train(["completely different text " * 50], vocab_size=300, show_progress=False)
    with pytest.raises(DataError, match=r"tokenized with a different tokenizer.*delete it and re-run"):
        TokenShards(tmp_path / "s", expect_tokenizer=other.fingerprint())


def test_missing_corrupt_and_truncated(tok, tmp_path):
    with pytest.raises(DataError, match=r"index.json missing"):
        TokenShards(tmp_path / "none")
    write_shards(DOCS, tok, tmp_path / "s", show_progress=False)
    shard = tmp_path / "s" / "shard_00000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(DataError, match=r"truncated"):
        TokenShards(tmp_path / "s")
    (tmp_path / "s" / "index.json").write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match=r"corrupt shard index"):
        TokenShards(tmp_path / "s")


def test_rewrite_replaces_atomically_and_failure_keeps_old(tok, tmp_path):
    write_shards(DOCS, tok, tmp_path / "s", show_progress=False)
    write_shards(DOCS[:2], tok, tmp_path / "s", show_progress=False)
    assert len(TokenShards(tmp_path / "s")) == len(expected_stream(tok, DOCS[:2]))

    def exploding():
        yield DOCS[0]
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_shards(exploding(), tok, tmp_path / "s", show_progress=False)
    assert len(TokenShards(tmp_path / "s")) == len(expected_stream(tok, DOCS[:2]))  # old shards intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temp leftovers


def test_stale_temp_dirs_of_dead_writers_are_removed(tok, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".s.tmp-{pid}-abc").mkdir()
    (tmp_path / f".s.tmp-{os.getpid()}-live").mkdir()  # a live writer's (this process): kept
    write_shards(DOCS, tok, tmp_path / "s", show_progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".s.tmp-{os.getpid()}-live", "s"]
