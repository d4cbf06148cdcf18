"""``llmkit export gguf CKPT --type f32|f16|bf16|q8_0|q4_0 --out FILE``: a GGUF for llama.cpp and ollama."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 81  # place in `llmkit --help`: pipeline order


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to other runtimes (GGUF for llama.cpp and ollama)",
        description="Export a checkpoint for other runtimes.",
    )
    formats = p.add_subparsers(dest="format", metavar="<format>", required=True)
    g = formats.add_parser(
        "gguf",
        help="one GGUF file (weights, tokenizer, chat template) and an ollama Modelfile beside it",
        description="Write a GGUF file that llama.cpp loads and tokenizes exactly like llmkit, and an ollama "
        "Modelfile beside it (ollama create NAME -f Modelfile).",
    )
    g.add_argument("checkpoint", type=Path, help="full-precision checkpoint directory")
    g.add_argument("--type", default="f32", help="tensor type: f32, f16, bf16, q8_0 or q4_0 (default: f32)")
    g.add_argument("--out", type=Path, required=True, help="output .gguf file")
    g.add_argument("--force", action="store_true", help="replace --out if it exists")
    g.set_defaults(func=run)


def run(args) -> int:
    from llmkit.export.gguf import export_gguf

    info = export_gguf(args.checkpoint, args.out, args.type, args.force)
    print(
        f"{args.out}: {info['bytes'] / 1e6:.2f} MB ({args.type}, architecture {info['architecture']}, "
        f"pre-tokenizer {info['pre_tokenizer']}); ollama: {info['modelfile']}"
    )
    return 0
