"""The ``data`` stage: corpus -> train/validation split -> tokenizer -> token shards.

The corpus is ``data.sources``, or the ``clean`` stage's output when ``clean`` is in the pipeline.

Writes ``tokenizer/`` (``tokenizer.json`` + ``tokenizer_config.json``), ``data/train/`` and
``data/val/<source>/`` (memmap shards + ``index.json``) and ``data/stats.json``. Each part is skipped
when already written, so a run killed mid-way redoes only what is missing.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llmkit.config import RunConfig
from llmkit.console import say
from llmkit.errors import DataError
from llmkit.files import atomic_write_json
from llmkit.stages import ReportSections, Stage, StageContext


@dataclass
class PreparedData:
    tokenizer: object  # Tokenizer
    train: object  # TokenShards
    val: dict  # source name -> TokenShards
    stats: dict


def load_prepared(run_dir: Path) -> PreparedData:
    """The data stage's outputs, opened (shards are memory-mapped, nothing is read yet)."""
    from llmkit.data.shards import TokenShards
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.load(run_dir / "tokenizer")
    stats = json.loads((run_dir / "data" / "stats.json").read_text(encoding="utf-8"))
    fp = tok.fingerprint()
    val = {name: TokenShards(run_dir / "data" / "val" / name, expect_tokenizer=fp) for name in stats["val_sets"]}
    return PreparedData(tok, TokenShards(run_dir / "data" / "train", expect_tokenizer=fp), val, stats)


def prepare_data(cfg: RunConfig, run_dir: Path) -> PreparedData:
    """Corpus -> split -> tokenizer -> shards, each step skipped when already done."""
    from llmkit.data.shards import write_shards
    from llmkit.data.splits import SplitCorpus
    from llmkit.tokenizer import Tokenizer

    tok_dir, train_dir, val_root = run_dir / "tokenizer", run_dir / "data" / "train", run_dir / "data" / "val"
    stats_path = run_dir / "data" / "stats.json"
    if (tok_dir / "tokenizer.json").is_file() and (train_dir / "index.json").is_file() and stats_path.is_file():
        return load_prepared(run_dir)

    t0 = time.perf_counter()
    data_cfg = cfg.data
    if "clean" in cfg.pipeline.stages:  # read what the clean stage wrote, not the raw sources
        from llmkit.stages.clean import cleaned_data_config

        data_cfg = cleaned_data_config(cfg, run_dir)
    corpus = SplitCorpus(data_cfg, cfg.train.seed)
    if not (tok_dir / "tokenizer.json").is_file():
        texts = _first_chars(corpus.train_documents(), cfg.tokenizer.max_train_chars)
        tok = Tokenizer.train(
            texts,
            cfg.tokenizer.vocab_size,
            cfg.tokenizer.min_frequency,
            show_progress=sys.stderr.isatty(),
            pre_tokenizer=cfg.tokenizer.pre_tokenizer,
        )
        tok.save(tok_dir)
        say(f"tokenizer: {tok.vocab_size} tokens trained in {time.perf_counter() - t0:.1f}s -> {tok_dir}")
    tok = Tokenizer.load(tok_dir)

    t1 = time.perf_counter()
    train_index = write_shards(
        corpus.train_documents(collect_validation=True),
        tok,
        train_dir,
        source=",".join(cfg.data.sources),
        show_progress=sys.stderr.isatty(),
    )
    for w in corpus.warnings():
        say(f"warning: {w}")
    if not train_index["tokens"]:
        raise DataError(f"data.sources={cfg.data.sources} gave no training documents; add text")
    for name, docs in corpus.val.items():
        write_shards(docs, tok, val_root / name, source=name, show_progress=False)
    say(
        f"shards: {train_index['tokens']:,} training tokens from {train_index['documents']:,} documents "
        f"({time.perf_counter() - t1:.1f}s)"
    )
    stats = {
        "sources": corpus.summary(),
        "warnings": corpus.warnings(),
        "val_sets": list(corpus.val),
        "train_tokens": train_index["tokens"],
        "train_bytes": train_index.get("bytes", 0),
    }
    atomic_write_json(stats_path, stats)
    return load_prepared(run_dir)


def _first_chars(docs, budget: int):
    """The documents, cut off after ``budget`` characters in total (0 = no limit)."""
    if not budget:
        yield from docs
        return
    for doc in docs:
        yield doc[:budget]
        budget -= len(doc)
        if budget <= 0:
            return


def _run(ctx: StageContext) -> None:
    prepare_data(ctx.cfg, ctx.run_dir)


def _report(ctx: StageContext) -> ReportSections:
    from llmkit.data.splits import source_label

    stats = json.loads((ctx.run_dir / "data" / "stats.json").read_text(encoding="utf-8"))
    rows = {
        f"{source_label(src)} documents (train/val)": f"{v['train_documents']:,} / {v['val_documents']:,}"
        for src, v in stats["sources"].items()
    }
    rows.update({f"{source_label(src)} bytes": v["bytes"] for src, v in stats["sources"].items()})
    rows["training tokens"] = stats["train_tokens"]
    if stats.get("train_bytes"):
        rows["bytes per token (train)"] = stats["train_bytes"] / max(1, stats["train_tokens"])
    for w in stats.get("warnings", []):
        rows[f"warning {len(rows)}"] = w
    return {"Data": rows}


STAGE = Stage(
    name="data",
    summary="read and split the corpus, train the tokenizer, write token shards",
    reads=(),
    writes=("tokenizer", "data"),
    run=_run,
    report=_report,
    settings=("data", "tokenizer"),
)
