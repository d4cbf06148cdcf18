"""``llmkit data fetch|stats|clean|shard``: look at, clean and prepare text before training on it."""

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
    s.add_argument(
        "--clean",
        action="store_true",
        help="also show what `data clean` would remove: per rule and source, examples, languages, lengths",
    )
    s.add_argument("--plots", type=Path, default=None, help="with --clean: save lengths.png and languages.png here")
    _source_args(s)
    _clean_args(s)
    s.set_defaults(func=run_stats)

    c = acts.add_parser(
        "clean",
        help="clean, deduplicate, decontaminate and mix sources into OUT/corpus/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Normalise, extract HTML, identify languages, apply quality and repetition rules, "
        "scrub PII, remove exact and near duplicates and text overlapping evaluation items, and mix the "
        "sources. Writes OUT/corpus/<source>/part-*.jsonl, OUT/report.json, OUT/DATACARD.md and "
        "OUT/lengths.png, OUT/languages.png. Re-running the same command resumes a killed run.",
        epilog=_clean_epilog(),
    )
    c.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="corpus name, path, glob, or hf:NAME[:CONFIG]; clean.field=value words are settings",
    )
    c.add_argument("--out", type=Path, default=None, help="output directory (required)")
    c.add_argument(
        "--eval-texts",
        type=Path,
        action="append",
        default=[],
        help="decontaminate against these evaluation items: a text file (one item per line) or JSONL "
        "(fields prompt, answer, solution, text); repeatable",
    )
    c.add_argument("--list-languages", action="store_true", help="print the language codes and exit")
    _source_args(c)
    _clean_args(c)
    c.set_defaults(func=run_clean)

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


def _clean_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None, help="cleaning processes (default: one per core)")
    p.add_argument("--languages", default=None, help="keep these languages, comma-separated (e.g. en,zh)")
    p.add_argument("--preset", default=None, help="take the clean.* settings of this preset (e.g. cpu-tiny)")


def _clean_epilog() -> str:
    from llmkit.config import field_docs

    lines = ["clean settings (clean.field=value):"]
    for name, default, doc in field_docs():
        if name.startswith("clean."):
            lines.append(f"  {name} = {default}\n      {doc}")
    return "\n".join(lines)


def _clean_cfg(args):
    from llmkit.config import CleanConfig, build_section, load_preset_dict, parse_overrides
    from llmkit.errors import ConfigError

    values = dict(load_preset_dict(args.preset).get("clean") or {}) if args.preset else {}
    nested = parse_overrides(args.overrides)  # taken out of SOURCE by _split_overrides
    unknown = sorted(set(nested) - {"clean"})
    if unknown:
        raise ConfigError(f"override section {unknown[0]!r} is not used here; write clean.field=value")
    values.update(nested.get("clean", {}))
    if args.workers is not None:
        values["workers"] = args.workers
    if args.languages is not None:
        values["languages"] = [x.strip() for x in args.languages.split(",") if x.strip()]
    return build_section(CleanConfig, values, "clean")


def _eval_texts(paths: list[Path]) -> list[str]:
    import json

    from llmkit.errors import DataError

    texts = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"--eval-texts {path}: no such file; give a text or JSONL file of evaluation items")
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise DataError(f"{path}:{lineno}: not JSON; write one JSON object per line") from None
                texts += [str(rec[k]) for k in ("prompt", "answer", "solution", "text") if rec.get(k)]
            else:
                texts.append(line)
    return texts


def _split_overrides(args) -> None:
    """``clean.field=value`` words among the sources are settings, not sources."""
    import re

    is_override = re.compile(r"^[a-z_]+\.[a-z_]+=").match
    args.overrides = [s for s in args.sources if is_override(s)]
    args.sources = [s for s in args.sources if not is_override(s)]
    if not args.sources:
        from llmkit.errors import ConfigError

        raise ConfigError("name at least one SOURCE to read (a corpus, file, directory, glob or hf:NAME)")


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


def run_clean(args) -> int:
    from llmkit.data.clean import clean_corpus
    from llmkit.data.clean.report import markdown

    if args.list_languages:
        from llmkit.data.clean.langid import known_languages

        print(" ".join(known_languages()))
        return 0
    if args.out is None:
        from llmkit.errors import ConfigError

        raise ConfigError("llmkit data clean: --out DIR is required (where the cleaned corpus is written)")
    _split_overrides(args)
    t0 = time.perf_counter()
    r = clean_corpus(args.sources, args.out, _clean_cfg(args), _cfg(args), _eval_texts(args.eval_texts))
    print(markdown(r, images=False))
    kept = sum(p["documents_kept"] for p in r["sources"].values())
    print(
        f"\nkept {kept:,} of {sum(p['documents_in'] for p in r['sources'].values()):,} documents -> "
        f"{args.out / 'corpus'} ({time.perf_counter() - t0:.1f}s); report: {args.out / 'DATACARD.md'}"
    )
    return 0


def _stats_with_rules(args) -> None:
    import shutil
    import tempfile

    from llmkit.data.clean import clean_corpus
    from llmkit.data.clean.report import markdown

    with tempfile.TemporaryDirectory(prefix="llmkit-stats-") as tmp:
        r = clean_corpus(args.sources, Path(tmp) / "out", _clean_cfg(args), _cfg(args))
        print("\n" + markdown(r, images=False))
        if args.plots:
            args.plots.mkdir(parents=True, exist_ok=True)
            for name in ("lengths.png", "languages.png"):
                shutil.copy(Path(tmp) / "out" / name, args.plots / name)
            print(f"\nplots: {args.plots / 'lengths.png'}, {args.plots / 'languages.png'}")


def run_stats(args) -> int:
    from llmkit.data.clean.report import markdown
    from llmkit.data.clean.runner import load_report
    from llmkit.data.sources import SourceStats, iter_documents

    _split_overrides(args)
    if len(args.sources) == 1 and load_report(Path(args.sources[0])) is not None:  # a cleaned corpus
        print(markdown(load_report(Path(args.sources[0])), images=False))
        return 0
    cfg = _cfg(args)
    print(f"{'source':<40} {'documents':>10} {'chars':>12} {'bytes':>12}")
    for source in cfg.sources:
        st = SourceStats()
        for _ in iter_documents(source, cfg, st):
            pass
        print(f"{source:<40} {st.documents:>10,} {st.chars:>12,} {st.bytes:>12,}")
        for w in st.warnings():
            print(f"  warning: {w}")
    if args.clean:
        _stats_with_rules(args)
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
