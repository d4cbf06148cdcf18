"""``llmkit data fetch|stats|shard``: look at and prepare text before training on it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ORDER = 10  # place in `llmkit --help`: pipeline order


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="fetch corpora, inspect sources, write token shards",
        description="Text sources are corpus names (shakespeare, fortunes-zh), files, directories, "
        "globs, .jsonl, .parquet, saved `datasets` directories or hf:NAME[:CONFIG].",
    )
    acts = p.add_subparsers(dest="data_command", metavar="<action>", required=True)

    f = acts.add_parser(
        "fetch",
        help="download and cache an offline corpus",
        description="Fetch a named corpus once into $LLMKIT_CACHE (default ~/.cache/llmkit).",
    )
    f.add_argument("name", help="corpus name: shakespeare or fortunes-zh")
    f.add_argument(
        "--cache-dir", type=Path, default=None, help="cache directory (default: $LLMKIT_CACHE or ~/.cache/llmkit)"
    )
    f.set_defaults(func=run_fetch)

    s = acts.add_parser(
        "stats",
        help="count documents, characters and bytes; report problems",
        description="Read each source as training would and report sizes and warnings.",
    )
    s.add_argument("sources", nargs="+", metavar="SOURCE", help="corpus name, path, glob, or hf:NAME[:CONFIG]")
    _source_args(s)
    s.set_defaults(func=run_stats)

    h = acts.add_parser(
        "shard",
        help="tokenize sources into OUT/train and OUT/val token shards",
        description="Split documents into train/val by a stable hash and write memmap token "
        "shards (index.json + shard_*.bin) with a trained tokenizer.",
    )
    h.add_argument("sources", nargs="+", metavar="SOURCE", help="corpus name, path, glob, or hf:NAME[:CONFIG]")
    h.add_argument("--tokenizer", type=Path, required=True, help="tokenizer directory (with tokenizer.json)")
    h.add_argument("--out", type=Path, required=True, help="output directory; OUT/train and OUT/val are written")
    h.add_argument("--val-fraction", type=float, default=0.05, help="fraction of documents held out (default: 0.05)")
    h.add_argument("--seed", type=int, default=0, help="seed of the train/val hash split (default: 0)")
    h.add_argument("--shard-tokens", type=int, default=50_000_000, help="tokens per shard file (default: 50,000,000)")
    h.add_argument(
        "--workers",
        type=int,
        default=0,
        help="encoding processes; 0 = this process, using every core through the Rust batch encoder (default: 0)",
    )
    _source_args(h)
    h.set_defaults(func=run_shard)


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--text-field", default="text", help="field holding the text in JSONL/Parquet/datasets (default: text)"
    )
    p.add_argument(
        "--strict", action="store_true", help="fail on the first malformed JSONL line instead of skipping it"
    )
    p.add_argument("--max-documents", type=int, default=0, help="read at most this many documents per source (0 = all)")


def _cfg(args):
    from llmkit.config import DataConfig

    return DataConfig(
        sources=list(args.sources),
        text_field=args.text_field,
        strict=args.strict,
        max_documents=args.max_documents,
        val_fraction=getattr(args, "val_fraction", 0.05),
    )


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def run_fetch(args) -> int:
    from llmkit.data.corpora import fetch_corpus

    t0 = time.perf_counter()
    files = fetch_corpus(args.name, args.cache_dir)
    total = 0
    for f in files:
        size = f.stat().st_size
        total += size
        print(f"{_human(size):>10}  {f}")
    print(f"{args.name}: {len(files)} files, {_human(total)} ({time.perf_counter() - t0:.1f}s)")
    return 0


def run_stats(args) -> int:
    from llmkit.data.sources import SourceStats, iter_documents

    cfg = _cfg(args)
    print(f"{'source':<40} {'documents':>10} {'chars':>12} {'bytes':>12}")
    for source in cfg.sources:
        st = SourceStats()
        for _ in iter_documents(source, cfg, st):
            pass
        print(f"{source:<40} {st.documents:>10,} {st.chars:>12,} {st.bytes:>12,}")
        for w in st.warnings():
            print(f"  warning: {w}")
    return 0


def run_shard(args) -> int:
    from llmkit.data.shards import write_shards
    from llmkit.data.sources import SourceStats, iter_documents, split_documents
    from llmkit.files import atomic_write_json
    from llmkit.tokenizer import Tokenizer

    cfg = _cfg(args)
    tok = Tokenizer.load(args.tokenizer)
    train, val, per_source = [], [], {}
    for source in cfg.sources:
        st = SourceStats()
        tr, va = split_documents(iter_documents(source, cfg, st), cfg.val_fraction, seed=args.seed)
        train += tr
        val += va
        per_source[source] = {
            "documents": st.documents,
            "chars": st.chars,
            "bytes": st.bytes,
            "train_documents": len(tr),
            "val_documents": len(va),
            "warnings": st.warnings(),
        }
        for w in st.warnings():
            print(f"warning: {source}: {w}")
    label = ",".join(cfg.sources)
    out = {}
    for name, docs in (("train", train), ("val", val)):
        t0 = time.perf_counter()
        index = write_shards(
            docs, tok, args.out / name, source=label, shard_tokens=args.shard_tokens, workers=args.workers
        )
        out[name] = {k: index[k] for k in ("tokens", "documents", "bytes")}
        print(
            f"{name}: {index['documents']:,} documents, {index['tokens']:,} tokens, "
            f"{index['bytes'] / max(index['tokens'], 1):.2f} bytes/token -> {args.out / name} "
            f"({time.perf_counter() - t0:.1f}s)"
        )
    atomic_write_json(
        args.out / "stats.json",
        {"sources": per_source, "splits": out, "tokenizer": tok.fingerprint(), "seed": args.seed},
    )
    print(f"stats: {args.out / 'stats.json'}")
    return 0
