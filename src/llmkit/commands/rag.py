"""``llmkit rag ...``: index documents, search them, measure retrieval (docs/rag.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ORDER = 91  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    p = sub.add_parser(
        "rag",
        help="retrieval over your documents: index, search, eval, remove, info",
        description="Retrieval over your own documents (txt, md, html, pdf, docx, jsonl): BM25 and dense "
        "embeddings, fused by reciprocal rank. See docs/rag.md.",
    )
    verbs = p.add_subparsers(dest="rag_command", metavar="<rag verb>", required=True)

    ix = verbs.add_parser(
        "index",
        help="index documents (re-run to pick up added, changed and deleted files)",
        description="Build an index, or bring it up to date: new files are added, changed files re-read, "
        "files gone from a named directory dropped; unchanged files are not embedded again. Settings "
        "default to the existing index's (or the defaults below for a new one).",
    )
    ix.add_argument("paths", nargs="+", type=Path, help="files and directories to index")
    ix.add_argument("--out", "-o", type=Path, required=True, help="index directory")
    ix.add_argument("--embedder", default=None, help="minilm (default, the packaged all-MiniLM-L6-v2) or a model dir")
    ix.add_argument("--retrievers", default=None, help="bm25,dense (default) or just one of them")
    ix.add_argument("--chinese", choices=["bigram", "jieba"], default=None, help="Chinese BM25 terms (default bigram)")
    ix.add_argument("--chunk-tokens", type=int, default=None, help="most tokens in a chunk (default 200)")
    ix.add_argument("--chunk-overlap", type=int, default=None, help="tokens shared by neighbouring chunks (default 40)")
    ix.add_argument("--text-field", default=None, help="JSONL field holding the text (default text)")
    ix.add_argument("--rebuild", action="store_true", help="index everything again (needed to change settings)")
    ix.add_argument("--skip-unreadable", action="store_true", help="skip files that cannot be read, with a warning")
    ix.add_argument("--device", default="cpu", help="device for the embedder (default cpu)")
    ix.set_defaults(func=run_index)

    rm = verbs.add_parser("remove", help="drop files from an index (names as `rag info` lists them)")
    rm.add_argument("index", type=Path, help="index directory")
    rm.add_argument("names", nargs="+", help="file names as the index shows them (docs/a.md)")
    rm.set_defaults(func=run_remove)

    se = verbs.add_parser("search", help="show the chunks a question retrieves")
    se.add_argument("index", type=Path, help="index directory")
    se.add_argument("query", help="the question or keywords")
    _search_args(se)
    se.add_argument("--json", action="store_true", help="one JSON object per hit on stdout")
    se.set_defaults(func=run_search)

    ev = verbs.add_parser(
        "eval",
        help="recall@k and MRR of each search mode on a question set",
        description="Measure retrieval. Questions come from --questions (JSONL: question, answer, source) "
        "or are generated from the indexed chunks (--generate N).",
    )
    ev.add_argument("index", type=Path, help="index directory")
    ev.add_argument("--questions", type=Path, default=None, help="JSONL question set")
    ev.add_argument("--generate", type=int, default=0, metavar="N", help="make N questions from the documents")
    ev.add_argument("--seed", type=int, default=0, help="seed for --generate")
    ev.add_argument("--save-questions", type=Path, default=None, help="write the generated questions here")
    ev.add_argument("--modes", default=None, help="comma-separated modes (default: all the index supports)")
    ev.add_argument("--reranker", type=Path, default=None, help="cross-encoder model dir to rerank candidates")
    ev.add_argument("--device", default="cpu", help="device for the embedder (default cpu)")
    ev.set_defaults(func=run_eval)

    ask = verbs.add_parser(
        "ask",
        help="answer a question from the index with a chat model, citing numbered sources",
        description="Retrieve passages, number them into the prompt, and let a chat model answer with [n] "
        "citations; the sources follow the answer (file and position).",
    )
    ask.add_argument("index", type=Path, help="index directory")
    ask.add_argument("question", help="the question to answer from the documents")
    ask.add_argument("--model", type=Path, required=True, dest="checkpoint", help="chat model checkpoint")
    ask.add_argument("-k", type=int, default=3, help="passages to retrieve (default 3)")
    ask.add_argument("--json", action="store_true", help="answer and sources as one JSON object")
    from llmkit.commands._common import add_model_args
    from llmkit.commands.generate import add_decoding_args

    add_model_args(ask)
    add_decoding_args(ask, max_new_tokens=64, temperature=0.0)
    ask.set_defaults(func=run_ask)

    info = verbs.add_parser("info", help="what an index holds and how it was built")
    info.add_argument("index", type=Path, help="index directory")
    info.set_defaults(func=run_info)


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", type=int, default=5, help="chunks to return (default 5)")
    p.add_argument("--mode", choices=["hybrid", "bm25", "dense"], default=None, help="default: hybrid when built")
    p.add_argument("--reranker", type=Path, default=None, help="cross-encoder model dir to rerank candidates")
    p.add_argument("--device", default="cpu", help="device for the embedder and reranker (default cpu)")


def _settings(args):
    """Settings for `rag index`: the existing index's, with the flags the user gave on top."""
    from llmkit.rag import store
    from llmkit.rag.index import IndexSettings, settings_of

    live = store.current_version(args.out) if args.out.is_dir() and not args.rebuild else None
    settings = settings_of(store.read_manifest(live)) if live else IndexSettings()
    if args.embedder is not None:
        settings.embedder = args.embedder
    if args.retrievers is not None:
        settings.retrievers = [r.strip() for r in args.retrievers.split(",") if r.strip()]
    if args.chinese is not None:
        settings.chinese = args.chinese
    if args.chunk_tokens is not None:
        settings.chunking.tokens = args.chunk_tokens
    if args.chunk_overlap is not None:
        settings.chunking.overlap = args.chunk_overlap
    if args.text_field is not None:
        settings.text_field = args.text_field
    return settings


def run_index(args) -> int:
    from llmkit.console import say
    from llmkit.rag.index import update_index

    summary = update_index(
        args.out,
        args.paths,
        _settings(args),
        rebuild=args.rebuild,
        skip_unreadable=args.skip_unreadable,
        device=args.device,
    )
    for name in summary.empty:
        say(f"rag: {name} has no text (empty, or a scanned PDF without a text layer); nothing indexed from it")
    if summary.skipped:
        say(f"rag: {summary.skipped} files of other types were skipped")
    kb = summary.bytes_read / 1e3
    rate = f", {kb / summary.seconds:.1f} kB/s" if summary.bytes_read and summary.seconds else ""
    print(f"{args.out}: {summary.line()} ({kb:.1f} kB read{rate})")
    return 0


def run_remove(args) -> int:
    from llmkit.rag.index import remove_from_index

    print(f"{args.index}: {remove_from_index(args.index, args.names).line()}")
    return 0


def open_index(args):
    from llmkit.rag.index import RagIndex
    from llmkit.rag.rerank import Reranker

    index = RagIndex.open(args.index, device=args.device)
    reranker = Reranker(args.reranker, device=args.device) if args.reranker else None
    return index, reranker


def run_search(args) -> int:
    index, reranker = open_index(args)
    mode = args.mode or index.modes[0]
    hits = index.search(args.query, k=args.k, mode=mode, reranker=reranker)
    if not hits:
        print("(no chunk shares a word with the question)" if mode == "bm25" else "(nothing found)")
    for i, h in enumerate(hits, 1):
        c = h.chunk
        if args.json:
            print(json.dumps({"rank": i, "score": h.score, "ranks": h.ranks, **c.to_dict()}, ensure_ascii=False))
            continue
        ranks = " ".join(f"{k}#{v}" for k, v in h.ranks.items())
        print(f"[{i}] {c.source} {c.where}  score {h.score:.4f}  ({ranks})")
        body = c.text if len(c.text) <= 400 else c.text[:400] + " ..."
        print("    " + body.replace("\n", "\n    "))
    return 0


def run_eval(args) -> int:
    from llmkit.errors import DataError
    from llmkit.rag.evaluate import evaluate, format_table, generate_questions, read_questions, write_questions

    index, reranker = open_index(args)
    if bool(args.questions) == bool(args.generate):
        raise DataError("give a question set (--questions FILE) or ask for generated questions (--generate N)")
    if args.questions:
        questions = read_questions(args.questions)
    else:
        questions = generate_questions(index.chunks, args.generate, seed=args.seed)
        if args.save_questions:
            write_questions(args.save_questions, questions)
    modes = [m.strip() for m in args.modes.split(",")] if args.modes else index.modes
    results = evaluate(index, questions, modes, reranker=reranker)
    print(format_table(results))
    return 0


def run_ask(args) -> int:
    from llmkit.commands._common import load_for_inference
    from llmkit.commands.generate import params_from_args
    from llmkit.rag.answer import ask
    from llmkit.rag.index import RagIndex

    index = RagIndex.open(args.index, device=args.device or "cpu")
    lm = load_for_inference(args)
    answer = ask(lm, index, args.question, params_from_args(args), k=args.k)
    if args.json:
        print(json.dumps({"answer": answer.reply, "sources": answer.sources_json()}, ensure_ascii=False))
        return 0
    print(answer.reply)
    print("\nSources:")
    for i, h in enumerate(answer.sources, 1):
        mark = "*" if i in answer.citations else " "
        print(f"{mark}[{i}] {h.chunk.source} ({h.chunk.where}): {' '.join(h.chunk.text.split())[:100]}")
    return 0


def run_info(args) -> int:
    from llmkit.rag.index import RagIndex

    index = RagIndex.open(args.index)
    m = index.manifest
    s = m["settings"]
    emb = m.get("embedder") or {}
    print(f"{args.index} ({index.version.name}, updated {m['updated']})")
    print(f"  retrievers: {', '.join(s['retrievers'])}; search modes: {', '.join(index.modes)}")
    if emb:
        print(f"  embedder: {emb['name']} ({emb['fingerprint']}, {emb['dim']} dims, {emb['pooling']} pooling)")
    print(f"  chunks: {m['chunks']} of at most {s['chunking']['tokens']} tokens, overlap {s['chunking']['overlap']}")
    print(f"  chinese BM25 terms: {s['chinese']}")
    print(f"  files ({len(m['files'])}):")
    for name, f in m["files"].items():
        print(f"    {name}  {f['bytes']} bytes, {f['chunks']} chunks")
    sys.stdout.flush()
    return 0
