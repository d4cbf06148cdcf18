"""``llmkit sample CKPT``: a first look at what a checkpoint writes (a thin wrapper over the engine)."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 50  # place in `llmkit --help`: pipeline order


def register(sub: argparse._SubParsersAction) -> None:
    from llmkit.commands._common import add_model_args

    p = sub.add_parser(
        "sample",
        help="print a few samples from a checkpoint",
        description="Sample continuations of a prompt from a checkpoint directory "
        "(runs/<name>/base, or any Llama-layout checkpoint).",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory")
    p.add_argument(
        "--prompt", action="append", default=None, help="prompt to continue (repeat for several; default: a newline)"
    )
    p.add_argument("--max-new-tokens", type=int, default=120, help="tokens per sample (default: 120)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens, 0 = all (default: 50)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0 = off)")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt (default: 1)")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default: 1337)")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.commands._common import load_for_inference

    lm = load_for_inference(args)
    prompts = args.prompt or ["\n"]
    texts = lm.generate(
        prompts,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        n=args.num_samples,
    )
    for prompt, outs in zip(prompts, texts, strict=True):
        for i, text in enumerate(outs if args.num_samples > 1 else [outs]):
            head = f"--- sample {i + 1}/{args.num_samples}" if args.num_samples > 1 else "---"
            print(head)
            print(prompt + text, flush=True)
    return 0
