"""Tokenizer compression and speed: llmkit's byte-level BPE vs a plain GPT-2-style peer.

Trains 4096-token tokenizers on the training split (80%, hash split) of shakespeare + fortunes-zh
and measures on the held-out 20%:

* bytes/token on English (Shakespeare) — higher is better compression;
* chars/token on Chinese: all of fortunes-zh (poems plus Debian tips that mix in English and
  shell commands) and the classical poems alone (tang300 + song100);
* training time per MB of training text, and encoding throughput (``encode_batch``, all cores).

Rows: llmkit's default ``qwen2`` pre-tokenizer, the ``llmkit`` pre-tokenizer with CJK runs of 1, 2,
3 characters and unlimited (``cjk_run`` of ``Tokenizer.train``), and the peer,
``tokenizers.ByteLevelBPETokenizer`` (GPT-2 regex: a run of Chinese is one pre-token, numbers in
any length) trained on the same text with the same vocabulary. Ratios are against the peer.

``--model-effect``: what the pre-tokenizer does for a model. cpu-tiny is pretrained twice on the
speedrun corpora (``pipeline.stages=[data,pretrain]``), once per pre-tokenizer (``qwen2``, and
``llmkit`` with its default CJK runs), the same steps; both are scored in bits per byte on the
run's own held-out documents (the data stage's split, which does not depend on the tokenizer),
per source, with the standard error of the paired difference.

    python benchmarks/bench_tokenizer.py                 # prints a markdown table
    python benchmarks/bench_tokenizer.py --vocab-size 8192 --repeats 1
    python benchmarks/bench_tokenizer.py --model-effect --work DIR   # two pretrainings, ~16 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from heldout import comparison_table, document_bits
from llmkit.config import DataConfig
from llmkit.data.corpora import fetch_corpus
from llmkit.data.sources import iter_documents, split_documents
from llmkit.tokenizer import SPECIAL_TOKENS, Tokenizer


def load_splits(seed: int = 0):
    cfg = DataConfig()
    en_tr, en_va = split_documents(iter_documents("shakespeare", cfg), 0.2, seed=seed)
    zh_tr, zh_va = split_documents(iter_documents("fortunes-zh", cfg), 0.2, seed=seed)
    poems = set()  # records of tang300/song100 (the cached files are one JSON record per line)
    for path in fetch_corpus("fortunes-zh"):
        if path.stem in ("tang300", "song100"):
            with open(path, encoding="utf-8") as f:
                poems.update(json.loads(line)["text"] for line in f if line.strip())
    poem_va = [d for d in zh_va if d in poems]
    return en_tr + zh_tr, {"en": "".join(en_va), "zh": "".join(zh_va), "poems": "".join(poem_va)}


class Peer:
    """tokenizers' stock ByteLevelBPETokenizer with our special tokens, same vocabulary size."""

    name = "peer: ByteLevelBPETokenizer (GPT-2 regex)"

    def __init__(self, texts, vocab_size, min_frequency):
        from tokenizers import ByteLevelBPETokenizer

        self.tok = ByteLevelBPETokenizer(add_prefix_space=False)
        self.tok.train_from_iterator(
            texts,
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=False,
        )

    def count(self, text: str) -> int:
        return len(self.tok.encode(text).ids)

    def encode_batch(self, texts):
        return self.tok.encode_batch(texts)


class Ours:
    def __init__(self, texts, vocab_size, min_frequency, cjk_run):
        """``cjk_run`` None: the ``qwen2`` pre-tokenizer (the default); else ``llmkit``'s with that run."""
        if cjk_run is None:
            self.name = "llmkit, qwen2 regex (default)"
        else:
            self.name = f"llmkit, CJK run {cjk_run if cjk_run else 'unlimited'}"
        self.tok = Tokenizer.train(
            texts,
            vocab_size,
            min_frequency,
            show_progress=False,
            cjk_run=cjk_run or 0,
            pre_tokenizer="qwen2" if cjk_run is None else "llmkit",
        )

    def count(self, text: str) -> int:
        return len(self.tok.encode(text))

    def encode_batch(self, texts):
        return self.tok.encode_batch(texts)


def measure(make, train_texts, evals, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        tok = make()
        best = min(best, time.perf_counter() - t0)
    lines = [ln for t in evals.values() for ln in t.splitlines(keepends=True)]
    t0 = time.perf_counter()
    tok.encode_batch(lines)
    enc_s = time.perf_counter() - t0
    mb_train = sum(len(t.encode()) for t in train_texts) / 1e6
    mb_eval = sum(len(t.encode()) for t in evals.values()) / 1e6
    return {
        "name": tok.name,
        "en_bpt": len(evals["en"].encode()) / tok.count(evals["en"]),
        "zh_cpt": len(evals["zh"]) / tok.count(evals["zh"]),
        "poem_cpt": len(evals["poems"]) / tok.count(evals["poems"]),
        "train_s": best,
        "s_per_mb": best / mb_train,
        "enc_mb_s": mb_eval / enc_s,
    }


def model_effect(steps: int | None, work: Path | None) -> None:
    """``work``: keep both runs there (a stopped run resumes; finished ones are only scored)."""
    from llmkit.config import resolve
    from llmkit.data.splits import SplitCorpus

    tmp = work or Path(tempfile.mkdtemp(prefix="bench-pretok-"))
    names = {"qwen2": "qwen2", "llmkit": "llmkit (CJK runs of 2)"}
    for pre in names:
        cmd = [sys.executable, "-m", "llmkit.cli", "speedrun", "--preset", "cpu-tiny", "--run-dir", str(tmp / pre)]
        cmd += ["pipeline.stages=[data,pretrain]", f"tokenizer.pre_tokenizer={pre}"]
        cmd += [f"train.max_steps={steps}"] if steps else []
        subprocess.run(cmd, check=True)
    cfg = resolve(base=yaml.safe_load((tmp / "qwen2" / "config.yaml").read_text(encoding="utf-8")))
    groups = SplitCorpus(cfg.data, cfg.train.seed).val  # source -> held-out documents
    groups = {"all": [d for docs in groups.values() for d in docs], **groups}
    bits = {}
    for pre, name in names.items():
        per_doc = document_bits(tmp / pre / "base", groups["all"])
        it = iter(per_doc)
        bits[name] = {"all": per_doc, **{g: [next(it) for _ in docs] for g, docs in groups.items() if g != "all"}}
    summary = {pre: json.loads((tmp / pre / "base" / "train_summary.json").read_text()) for pre in names}
    print(
        f"\ncpu-tiny, {summary['qwen2']['step']} steps each "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores); "
        + "; ".join(f"{names[p]}: {s['tokens_per_s']:,.0f} tokens/s" for p, s in summary.items())
        + "\n"
    )
    print(comparison_table(groups, bits, names["llmkit"], names["qwen2"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="training runs per row; the fastest is reported")
    ap.add_argument("--runs", default="1,2,3,0", help="CJK run lengths to compare (0 = unlimited)")
    ap.add_argument("--model-effect", action="store_true", help="pretrain cpu-tiny once per pre-tokenizer")
    ap.add_argument("--steps", type=int, default=None, help="--model-effect: steps per run (preset's if unset)")
    ap.add_argument("--work", type=Path, default=None, help="--model-effect: keep (and continue) the runs here")
    args = ap.parse_args()
    if args.model_effect:
        model_effect(args.steps, args.work)
        return

    train, evals = load_splits()
    mb = sum(len(t.encode()) for t in train) / 1e6
    print(
        f"training text: {mb:.2f} MB in {len(train)} documents; held out: "
        f"en {len(evals['en'].encode()) / 1e6:.2f} MB, zh {len(evals['zh']):,} chars "
        f"(poems {len(evals['poems']):,} chars); vocab {args.vocab_size}; "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}\n"
    )
    peer = measure(lambda: Peer(train, args.vocab_size, args.min_frequency), train, evals, args.repeats)
    rows = [measure(lambda: Ours(train, args.vocab_size, args.min_frequency, None), train, evals, args.repeats)]
    rows += [
        measure(lambda r=r: Ours(train, args.vocab_size, args.min_frequency, r), train, evals, args.repeats)
        for r in (int(x) for x in args.runs.split(","))
    ] + [peer]
    print(
        "| tokenizer | EN bytes/token | vs peer | ZH chars/token | vs peer | ZH poems chars/token | vs peer "
        "| train s/MB | vs peer | encode MB/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['en_bpt']:.2f} | {r['en_bpt'] / peer['en_bpt']:.2f}x | {r['zh_cpt']:.2f} | "
            f"{r['zh_cpt'] / peer['zh_cpt']:.2f}x | {r['poem_cpt']:.2f} | {r['poem_cpt'] / peer['poem_cpt']:.2f}x | "
            f"{r['s_per_mb']:.2f} | {r['s_per_mb'] / peer['s_per_mb']:.2f}x | {r['enc_mb_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
