"""``llmkit chat --rag/--tools`` and ``llmkit rag ask`` driven like a user would, on a tiny chat
checkpoint (random weights: the plumbing is under test, the skill is measured in benchmarks/)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from llmkit.checkpoint import save_checkpoint
from llmkit.cli import main
from llmkit.config import ModelConfig
from llmkit.model.transformer import Transformer
from llmkit.rag.index import IndexSettings, update_index

pytestmark = pytest.mark.xdist_group("rag")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from llmkit.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("ragchat")
    docs = root / "docs"
    docs.mkdir()
    (docs / "warehouse.md").write_text("# Access\n\nThe access code for the north warehouse is 4417.\n")
    (docs / "公司.txt").write_text("北区仓库的门禁密码是四四一七。\n", encoding="utf-8")
    update_index(root / "idx", [docs], IndexSettings(retrievers=["bm25"]))
    tok = Tokenizer.train(["Sources: Question: Answer: warehouse 4417 资料 问题 答案"] * 20, 320, show_progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      max_position_embeddings=512)  # fmt: skip
    ckpt = save_checkpoint(root / "sft", Transformer(cfg), tokenizer=tok, extra_config={"llmkit_stage": "sft"})
    return root / "idx", ckpt


def _chat(monkeypatch, capsys, ckpt, lines, *flags):
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
    rc = main(["chat", str(ckpt), "--max-new-tokens", "8", "--temperature", "0", *map(str, flags)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_chat_with_an_index_shows_the_sources(monkeypatch, capsys, setup):
    index, ckpt = setup
    rc, out, err = _chat(
        monkeypatch, capsys, ckpt, ["What code opens the north warehouse?", "仓库密码？"], "--rag", index
    )
    assert rc == 0, err
    assert "[1] docs/warehouse.md (lines 1-3)" in out and "[1] docs/公司.txt (line 1)" in out


def test_chat_with_tools_runs_the_loop_and_rejects_bad_names(monkeypatch, capsys, setup):
    _index, ckpt = setup
    rc, out, err = _chat(monkeypatch, capsys, ckpt, ["What is 37*8?"], "--tools", "calculator")
    assert "llmkit chat" in out
    assert rc == 0, err
    rc, _out, err = _chat(monkeypatch, capsys, ckpt, ["hi"], "--tools", "search")
    assert rc == 2 and "--tools search needs an index: add --rag INDEX" in err
    rc, _out, err = _chat(monkeypatch, capsys, ckpt, ["hi"], "--tools", "weather")
    assert rc == 2 and "unknown tool 'weather'" in err


def test_rag_ask_fits_the_context_and_returns_sources(capsys, setup):
    index, ckpt = setup
    rc = main(["rag", "ask", str(index), "What code opens the north warehouse?", "--model", str(ckpt),
               "--max-new-tokens", "8", "--json"])  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sources"][0]["source"] == "docs/warehouse.md" and "4417" in out["sources"][0]["text"]
    long_question = "why " * 600
    rc = main(["rag", "ask", str(index), long_question, "--model", str(ckpt), "--max-new-tokens", "8"])
    err = capsys.readouterr().err
    assert rc == 2 and "the question is" in err and "shorten the question" in err
