"""Retrieval: loaders, chunking, BM25 terms, embeddings against sentence-transformers, planted
facts found at rank 1 in English and Chinese, hybrid >= each retriever, incremental updates equal
to a rebuild, atomic writes, and the errors a user can run into."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
import torch

from llmkit.cli import main as cli
from llmkit.errors import ConfigError, DataError
from llmkit.rag import store
from llmkit.rag.bm25 import analyze
from llmkit.rag.chunking import ChunkingConfig, TokenCounter, chunk_document
from llmkit.rag.embed import Embedder
from llmkit.rag.evaluate import Question, evaluate, generate_questions, is_relevant
from llmkit.rag.index import IndexSettings, RagIndex, remove_from_index, update_index
from llmkit.rag.loaders import Document, find_files, load_file
from rag_data import facts, make_pdf, write_planted

pytestmark = pytest.mark.xdist_group("rag")


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture(scope="module")
def counter(embedder):
    return TokenCounter(embedder.path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, embedder):
    """One index over English and Chinese filler with every fact planted in it."""
    root = tmp_path_factory.mktemp("planted")
    docs = root / "docs"
    rows = write_planted(docs, "en", 9000) + write_planted(docs, "zh", 4000)
    update_index(root / "index", [docs], embedder=embedder)
    return RagIndex.open(root / "index", embedder=embedder), rows


# ---------------------------------------------------------------------- loaders
def test_loaders_read_every_format(tmp_path):
    import docx

    (tmp_path / "a.txt").write_text("plain text\r\nsecond line\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Title\n\nBody.\n", encoding="utf-8")
    (tmp_path / "c.html").write_text(
        "<html><head><title>Page</title><style>p{}</style><script>var x=1;</script></head>"
        "<body><h2>Section &amp; more</h2><p>First   para.</p><div>Second <b>para</b>.</div></body></html>",
        encoding="utf-8",
    )
    (tmp_path / "d.pdf").write_bytes(make_pdf(["Page one text.", "The code is 4417 on page two."]))
    d = docx.Document()
    d.add_heading("Report", level=1)
    d.add_paragraph("北区仓库的门禁密码是四四一七。")
    d.add_table(rows=1, cols=2).rows[0].cells[0].text = "cell"
    d.save(tmp_path / "e.docx")
    (tmp_path / "f.jsonl").write_text(
        json.dumps({"title": "FAQ", "text": "Q and A."}) + "\n\n" + json.dumps({"text": "second"}) + "\n"
    )
    (tmp_path / "skip.bin").write_bytes(b"\0\1")
    (tmp_path / ".hidden.txt").write_text("no")

    found, skipped = find_files([tmp_path])
    names = [n for _, n in found]
    base = tmp_path.name
    assert names == [f"{base}/{x}" for x in ("a.txt", "b.md", "c.html", "d.pdf", "e.docx", "f.jsonl")]
    assert [p.name for p in skipped] == ["skip.bin"]
    docs = {n: load_file(p, n) for p, n in found}
    assert docs[f"{base}/a.txt"][0].text == "plain text\nsecond line\n"
    assert docs[f"{base}/c.html"][0].text == "# Page\n\n## Section & more\n\nFirst para.\n\nSecond para."
    pdf = docs[f"{base}/d.pdf"][0]
    assert pdf.page_starts == [0, len("Page one text.") + 2] and "4417" in pdf.text
    assert docs[f"{base}/e.docx"][0].text == "# Report\n\n北区仓库的门禁密码是四四一七。\n\ncell"
    recs = docs[f"{base}/f.jsonl"]
    assert [r.source for r in recs] == [f"{base}/f.jsonl#1", f"{base}/f.jsonl#3"]
    assert recs[0].text == "# FAQ\n\nQ and A."


def test_unreadable_files_are_clear_errors(tmp_path):
    from pypdf import PdfReader, PdfWriter

    plain = tmp_path / "plain.pdf"
    plain.write_bytes(make_pdf(["secret plans"]))
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt("hunter2")
    writer.write(tmp_path / "locked.pdf")
    with pytest.raises(DataError, match=r"locked.pdf: the PDF is encrypted; decrypt it first"):
        load_file(tmp_path / "locked.pdf", "locked.pdf")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    with pytest.raises(DataError, match=r"broken.pdf: not a readable PDF"):
        load_file(tmp_path / "broken.pdf", "broken.pdf")
    (tmp_path / "broken.docx").write_bytes(b"PK\3\4 nope")
    with pytest.raises(DataError, match=r"broken.docx: not a readable .docx"):
        load_file(tmp_path / "broken.docx", "broken.docx")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": "wrong field"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: no string field 'text'"):
        load_file(tmp_path / "bad.jsonl", "bad.jsonl")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(DataError, match=r"cannot index .xlsx files"):
        find_files([tmp_path / "x.xlsx"])


# ---------------------------------------------------------------------- chunking
def test_chunks_follow_headings_sentences_and_token_budget(counter):
    body_en = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(70))
    body_zh = "".join(f"第{i}句话讲的是北京的天气和城市。" for i in range(40))
    text = f"# Guide\n\n## Setup\n\n{body_en}\n\nShort closing paragraph.\n\n## 中文\n\n{body_zh}\n"
    cfg = ChunkingConfig(tokens=64, overlap=16)
    chunks = chunk_document(Document("g.md", text, "md"), counter, cfg)
    assert len(chunks) > 8
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert counter.count([c.text])[0] <= cfg.tokens + 2  # sentence sums ~= the whole's count
        assert ("## Setup" in c.text or "Sentence" in c.text or "Short" in c.text) != ("第" in c.text)
        stripped = c.text.rstrip()
        assert stripped.endswith((".", "。")), stripped[-20:]  # every chunk ends at a sentence end
        assert c.heading in ("Guide > Setup", "Guide > 中文")
    assert chunks[0].text.startswith("# Guide\n\n## Setup")  # a bare heading joins its first section
    # neighbours in a section overlap by whole sentences, at most `overlap` tokens
    same = [(a, b) for a, b in itertools.pairwise(chunks) if a.heading == b.heading]
    assert all(b.start < a.end for a, b in same)
    assert all(counter.count([text[b.start : a.end]])[0] <= cfg.overlap + 2 for a, b in same)
    zh = [c for c in chunks if c.heading.endswith("中文")]
    assert zh[0].line == text[: zh[0].start].count("\n") + 1 and zh[-1].where.startswith("line")


def test_pdf_chunks_know_their_page(tmp_path, counter):
    (tmp_path / "r.pdf").write_bytes(
        make_pdf(["Intro page with a few words of text.", "Results: the yield was 93 percent in the final trial run."])
    )
    (doc,) = load_file(tmp_path / "r.pdf", "r.pdf")
    chunks = chunk_document(doc, counter, ChunkingConfig(tokens=16, overlap=0))
    assert [c.where for c in chunks] == ["p. 1", "p. 2"]


def test_bm25_terms_for_english_and_chinese():
    assert analyze("The Quick brown FOX, ＡＢＣ１２３!") == ["quick", "brown", "fox", "abc123"]
    assert analyze("北京大学的学生", "bigram") == ["北京", "京大", "大学", "学的", "的学", "学生"]
    jieba_terms = analyze("北京大学的学生", "jieba")
    assert "北京大学" in jieba_terms and "学生" in jieba_terms and "的" not in jieba_terms
    assert analyze("Python 3.12 在北京", "bigram") == ["python", "3", "12", "在北", "北京"]


# ---------------------------------------------------------------------- embeddings
def test_embedder_matches_sentence_transformers(embedder):
    from sentence_transformers import SentenceTransformer

    texts = ["The access code is 4417.", "北区仓库的门禁密码是四四一七。", "word " * 400]
    ours = embedder.embed(texts)
    theirs = SentenceTransformer(str(embedder.path), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert ours.shape == (3, 384) and embedder.describe()["pooling"] == "mean"


@pytest.fixture(scope="module")
def llmkit_checkpoint(tmp_path_factory):
    from llmkit.checkpoint import save_checkpoint
    from llmkit.config import ModelConfig
    from llmkit.model.transformer import Transformer
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.train(["the quick brown fox jumps over the lazy dog 北京 上海"] * 20, 300, show_progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(path, Transformer(cfg), tok)
    return path


def test_any_checkpoint_embeds_by_mean_pooling(llmkit_checkpoint):
    from llmkit.checkpoint import load_model
    from llmkit.tokenizer import Tokenizer

    emb = Embedder(llmkit_checkpoint)
    texts = ["the quick fox", "北京 上海 the lazy dog jumps"]
    got = emb.embed(texts)
    model, tok = load_model(llmkit_checkpoint).eval(), Tokenizer.load(llmkit_checkpoint)
    for text, vec in zip(texts, got, strict=True):
        with torch.no_grad():
            h = model.hidden_states(torch.tensor([tok.encode(text, bos=True)]))[0].mean(
                0
            )  # (C,) BOS as transformers adds it
        np.testing.assert_allclose(vec, torch.nn.functional.normalize(h, dim=0).numpy(), atol=1e-5)


# ---------------------------------------------------------------------- the index
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_planted_facts_are_found_at_rank_1(planted, lang):
    index, rows = planted
    rows = [r for r in rows if r["lang"] == lang]
    for r in rows:
        hits = index.search(r["question"], k=1, mode="hybrid")
        assert hits and r["answer"] in hits[0].chunk.text, (r["question"], hits[0].chunk.text[:200] if hits else None)
        assert hits[0].chunk.source.endswith(r["file"])


def test_hybrid_recall_is_at_least_each_retriever(planted):
    index, rows = planted
    questions = [Question(r["question"], r["answer"], lang=r["lang"]) for r in rows]
    for lang in ("en", "zh"):
        res = evaluate(index, [q for q in questions if q.lang == lang], ["hybrid", "bm25", "dense"], ks=(1, 5))
        hybrid = res["hybrid"]["recall@5"].value
        assert hybrid >= res["bm25"]["recall@5"].value and hybrid >= res["dense"]["recall@5"].value, (lang, res)


def test_generated_questions_are_answerable_and_deterministic(planted):
    index, _ = planted
    qs = generate_questions(index.chunks, 30, seed=3)
    assert len(qs) == 30 and qs == generate_questions(index.chunks, 30, seed=3)
    assert {q.lang for q in qs} == {"en", "zh"}
    for q in qs:
        assert any(is_relevant(c, q) for c in index.chunks)
        assert q.question != q.answer
    res = evaluate(index, qs, ["bm25"], ks=(1, 3, 10))["bm25"]
    assert res["recall@1"].value <= res["recall@3"].value <= res["recall@10"].value
    assert res["recall@10"].value > 0.5 and 0 < res["mrr"].value <= res["recall@10"].value


def _results(index, queries):
    out = []
    for q in queries:
        for mode in index.modes:
            out.append(
                [(h.chunk.source, h.chunk.start, h.chunk.end, round(h.score, 4)) for h in index.search(q, 5, mode)]
            )
    return out


def test_incremental_updates_equal_a_full_rebuild(tmp_path, embedder):
    docs = tmp_path / "docs"
    write_planted(docs, "en", 1500, files=3, seed=1)
    extra = tmp_path / "extra.md"
    extra.write_text("# Extra\n\nThe spare key hangs behind the blue door.\n")
    first = update_index(tmp_path / "inc", [docs], embedder=embedder)
    assert len(first.added) == 3 and first.embedded == first.chunks
    # change one file, delete one, add one; a separately named file joins too
    (docs / "en_0.txt").write_text((docs / "en_0.txt").read_text() + "\nThe ferry now leaves at 23:10.\n")
    (docs / "en_1.txt").unlink()
    (docs / "en_3.txt").write_text("A brand new file about the north warehouse and its 4417 code.\n")
    second = update_index(tmp_path / "inc", [docs, extra], embedder=embedder)
    assert sorted(second.changed) == ["docs/en_0.txt"] and second.removed == ["docs/en_1.txt"]
    assert sorted(second.added) == ["docs/en_3.txt", "extra.md"] and second.unchanged == 1
    assert second.embedded < second.chunks  # the unchanged file was not embedded again
    again = update_index(tmp_path / "inc", [docs, extra], embedder=embedder)
    assert again.embedded == 0 and again.unchanged == 4

    update_index(tmp_path / "full", [docs, extra], embedder=embedder)
    inc, full = RagIndex.open(tmp_path / "inc", embedder=embedder), RagIndex.open(tmp_path / "full", embedder=embedder)
    assert [c.to_dict() for c in inc.chunks] == [c.to_dict() for c in full.chunks]
    queries = [f["question"] for f in facts("en")[:6]] + [
        "ferry departure time",
        "spare key location",
        "warehouse 4417",
    ]
    assert _results(inc, queries) == _results(full, queries)

    remove_from_index(tmp_path / "inc", ["extra.md"])
    assert "extra.md" not in RagIndex.open(tmp_path / "inc").manifest["files"]
    with pytest.raises(DataError, match=r"'nope.md' is not in"):
        remove_from_index(tmp_path / "inc", ["nope.md"])


def test_an_index_refuses_another_embedder(tmp_path, embedder, llmkit_checkpoint):
    (tmp_path / "a.txt").write_text("The access code for the north warehouse is 4417.\n")
    update_index(tmp_path / "idx", [tmp_path / "a.txt"], embedder=embedder)
    with pytest.raises(ConfigError, match=r"was built with embedder minilm .* rebuild it"):
        RagIndex.open(tmp_path / "idx", embedder=Embedder(llmkit_checkpoint))
    other = IndexSettings(embedder=str(llmkit_checkpoint))
    with pytest.raises(ConfigError, match=r"was built with embedder='minilm'.*--rebuild"):
        update_index(tmp_path / "idx", [tmp_path / "a.txt"], other)
    rebuilt = update_index(tmp_path / "idx", [tmp_path / "a.txt"], other, rebuild=True)
    assert rebuilt.embedded == 1
    index = RagIndex.open(tmp_path / "idx")
    assert index.manifest["embedder"]["dim"] == 32 and index.search("warehouse code", 1, "dense")


def test_a_failed_update_leaves_the_index_as_it_was(tmp_path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The access code for the north warehouse is 4417.\n")
    update_index(tmp_path / "idx", [docs], IndexSettings(retrievers=["bm25"]))
    before = store.current_version(tmp_path / "idx")
    (docs / "b.pdf").write_bytes(b"%PDF-1.4 broken")
    (docs / "a.txt").write_text("Changed text.\n")
    with pytest.raises(DataError, match=r"b.pdf: not a readable PDF.*--skip-unreadable"):
        update_index(tmp_path / "idx", [docs])
    assert store.current_version(tmp_path / "idx") == before
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [".lock", "CURRENT", before.name]
    assert "4417" in RagIndex.open(tmp_path / "idx").search("warehouse", 1, "bm25")[0].chunk.text
    # a version left half-written by a killed process is ignored, then replaced
    shutil.copytree(before, tmp_path / "idx" / "v9")
    (tmp_path / "idx" / "v9" / "chunks.jsonl").write_text("{broken")
    summary = update_index(tmp_path / "idx", [docs], skip_unreadable=True)
    assert summary.changed == ["docs/a.txt"] and store.current_version(tmp_path / "idx").name == "v2"
    assert not (tmp_path / "idx" / "v9").exists() and not before.exists()


def test_empty_documents_are_reported(tmp_path):
    (tmp_path / "empty.txt").write_text("   \n\n")
    (tmp_path / "blank.pdf").write_bytes(make_pdf([""]))
    with pytest.raises(DataError, match="no text to index: every file is empty"):
        update_index(tmp_path / "idx", [tmp_path], IndexSettings(retrievers=["bm25"]))
    assert not store.is_index(tmp_path / "idx")
    (tmp_path / "real.txt").write_text("Some real text here.\n")
    summary = update_index(tmp_path / "idx", [tmp_path], IndexSettings(retrievers=["bm25"]))
    assert sorted(summary.empty) == [f"{tmp_path.name}/blank.pdf", f"{tmp_path.name}/empty.txt"]


def test_reranker_reorders_candidates_by_cross_encoder_score(tmp_path, planted, embedder):
    from transformers import BertConfig, BertForSequenceClassification

    from llmkit.rag.rerank import Reranker

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, num_labels=1)  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "ce")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(embedder.path / f, tmp_path / "ce" / f)
    reranker = Reranker(tmp_path / "ce")
    index, _ = planted
    query = "What code opens the north warehouse?"
    first = index.search(query, k=10, mode="hybrid")
    hits = index.search(query, k=10, mode="hybrid", reranker=reranker, depth=10)
    assert {h.chunk.start for h in hits} == {h.chunk.start for h in first}
    expected = reranker.scores(query, [h.chunk.indexed_text for h in first])
    assert [h.score for h in hits] == sorted(expected, reverse=True)
    assert [h.ranks["rerank"] for h in hits] == list(range(1, 11))


# ---------------------------------------------------------------------- the CLI
def test_rag_cli_index_search_eval_and_errors(tmp_path, capsys):
    docs = tmp_path / "docs"
    rows = write_planted(docs, "zh", 1500, files=2)
    out = tmp_path / "idx"
    assert cli(["rag", "index", str(docs), "--out", str(out), "--retrievers", "bm25", "--chinese", "jieba"]) == 0
    assert "2 added" in capsys.readouterr().out
    assert cli(["rag", "search", str(out), rows[0]["question"], "-k", "1", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)
    assert rows[0]["answer"] in hit["text"] and hit["ranks"] == {"bm25": 1}
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("\n".join(json.dumps({"question": r["question"], "answer": r["answer"]}) for r in rows))
    assert cli(["rag", "eval", str(out), "--questions", str(qfile)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| mode | recall@1") and "| bm25 |" in table and f"| {len(rows)} |" in table
    assert cli(["rag", "info", str(out)]) == 0
    assert "chinese BM25 terms: jieba" in capsys.readouterr().out

    # a setting that differs from the index's is refused, naming the fix; nothing is written
    assert cli(["rag", "index", str(docs), "--out", str(out), "--chunk-tokens", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "chunking" in err[0] and "--rebuild" in err[0] and "Traceback" not in err[0]
    assert store.current_version(out).name == "v1"
    assert cli(["rag", "search", str(tmp_path / "nowhere"), "q"]) == 2
    assert "no index here; build one with `llmkit rag index" in capsys.readouterr().err
    assert cli(["rag", "search", str(out), "q", "--mode", "dense"]) == 2
    assert "this index supports bm25" in capsys.readouterr().err
