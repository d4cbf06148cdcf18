"""Cleaning: throughput per step and per pipeline against datatrove, and what cleaning does for a model.

``throughput`` (default): MB/s per core of each cleaning step and of the whole local pipeline
(one process) on the speedrun corpora (shakespeare + fortunes-zh, 7.1 MB), next to datatrove's own
steps with comparable filters on the same documents, and datatrove's whole pipeline (reader ->
ftfy -> Gopher quality -> Gopher repetition -> PII -> MinHash signatures, one task) against
llmkit's (``clean_corpus``, one worker). datatrove's word-based steps get its WhitespaceTokenizer
with words split by ``str.split`` (its own word splitting, and its default English tokenizer, need
spaCy; its language filter needs a fastText model download, so it has no row). Each figure is the
best of ``--repeats`` alternating runs.

``--quality``: a deliberately dirty corpus (the speedrun corpora plus planted exact and near
duplicates, boilerplate lines and noise documents), a cpu-tiny model trained on it as is and
after ``llmkit data clean``, the same steps; both scored in bits per byte on the same clean
held-out documents (5% of the original corpora, by hash, never in either training set), in all and
per language, with the standard error of the paired difference (documents are the unit).

    python benchmarks/bench_clean.py                      # throughput table
    python benchmarks/bench_clean.py --quality --steps 200
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from heldout import comparison_table, document_bits, mostly_chinese
from llmkit.config import CleanConfig, DataConfig
from llmkit.data.sources import iter_documents, split_key


def corpus() -> list[str]:
    cfg = DataConfig()
    return list(iter_documents("shakespeare", cfg)) + list(iter_documents("fortunes-zh", cfg))


def _mb(docs) -> float:
    return sum(len(d.encode("utf-8")) for d in docs) / 1e6


def whitespace_words():
    """datatrove's WhitespaceTokenizer (its sentence splitting) with words from ``str.split``.

    datatrove 0.10's own ``word_tokenize`` goes through spaCy, which is not installed here; a plain
    split is the cheapest word splitter there is, so this favours datatrove, if anything.
    """
    from datatrove.utils.word_tokenizers import WhitespaceTokenizer

    class SplitWords(WhitespaceTokenizer):
        def word_tokenize(self, text) -> list[str]:
            return text.split()

    return SplitWords()


def datatrove_xxhash_str():
    """Let datatrove 0.10's xxhash functions take ``str`` again, as they did before xxhash 4.

    xxhash 4 refuses ``str`` ("Strings must be encoded before hashing"), which breaks datatrove's
    MinHash shingles; hashing the UTF-8 bytes is what xxhash 3 did with a ``str``.
    """
    import xxhash
    from datatrove.utils.hashes import xxhash as dt_xxhash

    dt_xxhash.xxhash32 = lambda data: xxhash.xxh32_intdigest(data.encode() if isinstance(data, str) else data)
    dt_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(data.encode() if isinstance(data, str) else data)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def throughput(repeats: int) -> None:
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.formatters import FTFYFormatter, PIIFormatter

    from llmkit.data.clean import langid, normalise, pii, quality, repetition
    from llmkit.data.clean.dedup import signature
    from llmkit.data.clean.tokens import tokens

    docs = corpus()
    mb = _mb(docs)
    ws = whitespace_words()
    datatrove_xxhash_str()
    q, r = quality.QualityThresholds(), repetition.RepetitionThresholds()
    langid.identify("warm up")
    signature(tokens("warm up the permutations"), 5, 128)
    mh = MinhashDedupSignature(tempfile.mkdtemp(), MinhashConfig(), language=ws)
    dt_docs = [Document(text=d, id=str(i)) for i, d in enumerate(docs)]
    ftfy_dt, pii_dt = FTFYFormatter(), PIIFormatter()
    gq, gr = GopherQualityFilter(language=ws), GopherRepetitionFilter(language=ws)
    toks = [tokens(d) for d in docs]
    rows = [
        (
            "normalise (ftfy + NFC + whitespace)",
            lambda: [normalise.normalise(d) for d in docs],
            lambda: [ftfy_dt.format(d) for d in docs],
        ),
        ("language identification", lambda: [langid.identify(d) for d in docs], None),
        ("tokens (words, Chinese characters)", lambda: [tokens(d) for d in docs], None),
        (
            "quality rules",
            lambda: [quality.check(d, t, ["en"], q) for d, t in zip(docs, toks, strict=True)],
            lambda: [gq.filter(d) for d in dt_docs],
        ),
        (
            "repetition rules",
            lambda: [repetition.check(d, t, r) for d, t in zip(docs, toks, strict=True)],
            lambda: [gr.filter(d) for d in dt_docs],
        ),
        ("PII scrubbing", lambda: [pii.scrub(d) for d in docs], lambda: [pii_dt.format(d) for d in docs]),
        (
            "MinHash signature (5-token shingles, 112-128 hashes)",
            lambda: [signature(t, 5, 128) for t in toks],
            lambda: [mh.get_signature(s) for s in map(mh.get_shingles, docs) if s.size],  # as its run() skips
        ),
    ]
    print(f"input: shakespeare + fortunes-zh, {len(docs):,} documents, {mb:.2f} MB; one process; best of {repeats}\n")
    print("| step | llmkit MB/s | datatrove MB/s | llmkit / datatrove |")
    print("|---|---|---|---|")
    for name, ours, theirs in rows:
        a = mb / best(ours, repeats)
        b = mb / best(theirs, repeats) if theirs else None
        print(f"| {name} | {a:.2f} | {f'{b:.2f}' if b else 'n/a'} | {f'{a / b:.2f}x' if b else ''} |")
    pipelines(docs, mb, repeats)


def pipelines(docs: list[str], mb: float, repeats: int) -> None:
    """Whole pipelines, one process each, on the same JSONL file."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.formatters import FTFYFormatter, PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from llmkit.data.clean import clean_corpus

    tmp = Path(tempfile.mkdtemp(prefix="bench-clean-"))
    src = tmp / "in" / "corpus.jsonl"
    src.parent.mkdir()
    src.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    ws = whitespace_words()
    datatrove_xxhash_str()

    def ours(workers: int, dedup: str):
        def run():
            out = tmp / f"llmkit-{workers}-{dedup}"
            shutil.rmtree(out, ignore_errors=True)
            cfg = CleanConfig(workers=workers, dedup=dedup, pii=True, languages=["en", "zh"])
            clean_corpus([str(src)], out, cfg, show_progress=False)

        return run

    def theirs():
        out = tmp / "dt"
        shutil.rmtree(out, ignore_errors=True)
        pipeline = [
            JsonlReader(str(src.parent)),
            FTFYFormatter(),
            GopherQualityFilter(language=ws),
            GopherRepetitionFilter(language=ws),
            PIIFormatter(),
            JsonlWriter(str(out / "kept")),
            MinhashDedupSignature(str(out / "sigs"), MinhashConfig(), language=ws),
        ]
        LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=str(out / "logs")).run()

    print("\n| pipeline (7.1 MB) | seconds | MB/s | MB/s per core |")
    print("|---|---|---|---|")
    for name, fn, cores in (
        ("llmkit, 1 worker: every step + exact and near dedup + write", ours(1, "near"), 1),
        ("llmkit, 1 worker: every step, dedup off", ours(1, "off"), 1),
        ("datatrove, 1 task: ftfy, Gopher quality + repetition, PII, write, MinHash signatures", theirs, 1),
        ("llmkit, 2 workers: every step + dedup + write", ours(2, "near"), 2),
    ):
        s = best(fn, repeats)
        print(f"| {name} | {s:.1f} | {mb / s:.2f} | {mb / s / cores:.2f} |")
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------- quality
BOILERPLATE = [
    "Home | About | Contact | Accept cookies to use this site | Privacy Policy",
    "Copyright 2024 Example Media. All rights reserved. Terms of Use",
    "版权所有 © 2024 某某网 | 隐私政策 | 用户协议 | 京ICP备12345678号",
    "上一篇：返回列表  下一篇：没有了",
]


COPIED_SHARE = 0.3


def dirty_corpus(train: list[str], rng: random.Random) -> list[str]:
    """``train`` plus planted exact/near duplicates, boilerplate lines and noise documents."""
    out = []
    for d in train:
        if rng.random() < 0.4:
            lines = d.split("\n")
            for _ in range(max(1, len(lines) // 150)):
                lines.insert(rng.randrange(len(lines) + 1), rng.choice(BOILERPLATE))
            d = "\n".join(lines)
        out.append(d)
    # Copies, exact and lightly edited, of about COPIED_SHARE of each language's bytes: the same share
    # for both, so removing them restores the mixture the held-out documents come from rather than
    # shifting it (copying short documents only would over-weight Chinese, whose documents are short).
    for lang_docs in ([d for d in train if not mostly_chinese(d)], [d for d in train if mostly_chinese(d)]):
        target = COPIED_SHARE * sum(len(d) for d in lang_docs)
        copied = 0
        for d in rng.sample(lang_docs, len(lang_docs)):
            if copied >= target:
                break
            times = rng.randint(1, 3)
            out += [d, d.replace("，", ",", 1).replace(" the ", " a ", 1)] * times
            copied += 2 * times * len(d)
    for _ in range(len(train) // 4):  # noise
        kind = rng.randrange(5)
        if kind == 0:
            out.append(base64.b64encode(rng.randbytes(rng.randint(200, 3000))).decode())
        elif kind == 1:
            out.append(" ".join(str(rng.randint(0, 99999)) for _ in range(rng.randint(50, 400))))
        elif kind == 2:
            out.append(rng.choice(train)[:2000].encode("utf-8").decode("cp1252", errors="replace"))
        elif kind == 3:
            out.append(
                "\n".join(["BUY CHEAP WATCHES ONLINE best price click here free shipping"] * rng.randint(20, 80))
            )
        else:
            out.append("".join(chr(rng.randint(0x21, 0x2FFF)) for _ in range(rng.randint(100, 1500))))
    rng.shuffle(out)
    return out


def quality_effect(steps: int, work: Path | None = None) -> None:
    """``work``: keep the corpus and both runs there, and continue them if they stopped (a run
    interrupted mid-way resumes; its stage times are then those the run records, of the last part)."""
    rng = random.Random(0)
    docs = corpus()
    val = [d for d in docs if split_key(d, 7) < 0.05]
    train = [d for d in docs if split_key(d, 7) >= 0.05]
    dirty = dirty_corpus(train, rng)
    tmp = work or Path(tempfile.mkdtemp(prefix="bench-clean-q-"))
    (tmp / "dirty").mkdir(parents=True, exist_ok=True)
    if not (tmp / "dirty" / "dirty.jsonl").is_file():
        (tmp / "dirty" / "dirty.jsonl").write_text(
            "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in dirty), encoding="utf-8"
        )
    print(
        f"dirty corpus: {len(dirty):,} documents, {_mb(dirty):.2f} MB (clean part {_mb(train):.2f} MB); "
        f"held out: {len(val):,} documents, {_mb(val):.2f} MB"
    )
    results = {}
    for name, stages in (("raw", "[data,pretrain]"), ("cleaned", "[clean,data,pretrain]")):
        run = tmp / name
        cmd = [
            sys.executable,
            "-m",
            "llmkit.cli",
            "speedrun",
            "--preset",
            "cpu-tiny",
            "--run-dir",
            str(run),
            f"data.sources=[{tmp / 'dirty'}]",
            f"pipeline.stages={stages}",
            f"train.max_steps={steps}",
            f"train.eval_every={steps}",
            f"train.ckpt_every={steps}",
        ]
        subprocess.run(cmd, check=True)
        st = json.loads((run / "data" / "stats.json").read_text())
        stage_seconds = json.loads((run / "stages.json").read_text())
        pretrain = json.loads((run / "base" / "train_summary.json").read_text())
        results[name] = (document_bits(run / "base", val), st["train_tokens"], stage_seconds, pretrain)
    n_bytes = [len(d.encode("utf-8")) for d in val]
    print(
        f"\ncpu-tiny, {steps} steps, same {len(val)} held-out documents "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores)\n"
    )
    print("| training corpus | training tokens | held-out bits/byte | stage times | pretraining tokens/s |")
    print("|---|---|---|---|---|")
    for name, (bits, tokens_, stage_seconds, pretrain) in results.items():
        times = ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in stage_seconds.items())
        tps = pretrain.get("tokens_per_s")
        print(f"| {name} | {tokens_:,} | {sum(bits) / sum(n_bytes):.4f} | {times} | {f'{tps:,.0f}' if tps else '?'} |")
    index = {"all": list(range(len(val)))}
    for lang in ("en", "zh"):
        index[lang] = [i for i, d in enumerate(val) if mostly_chinese(d) == (lang == "zh")]
    groups = {g: [val[i] for i in idx] for g, idx in index.items()}
    bits = {k: {g: [results[k][0][i] for i in idx] for g, idx in index.items()} for k in results}
    print("\n" + comparison_table(groups, bits, "raw", "cleaned"))
    if work is None:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quality", action="store_true", help="train on the dirty corpus with and without cleaning")
    p.add_argument("--steps", type=int, default=200, help="training steps of each --quality run")
    p.add_argument("--work", type=Path, default=None, help="keep (and continue) the --quality runs here")
    args = p.parse_args()
    if args.quality:
        quality_effect(args.steps, args.work)
    else:
        throughput(args.repeats)


if __name__ == "__main__":
    main()
