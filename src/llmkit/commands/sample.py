"""``llmkit sample CKPT``: a first look at what a checkpoint writes (a thin wrapper over the engine)."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 42  # place in `llmkit --help`: pipeline order


def register(sub: argparse._SubParsersAction) -> None:
    from llmkit.commands._common import DefaultsHelpFormatter, add_model_args
    from llmkit.config import SampleConfig, TrainConfig

    p = sub.add_parser(
        "sample",
        help="print a few samples from a checkpoint",
        description="Sample continuations of a prompt from a checkpoint directory "
        "(runs/<name>/base, or any Llama-layout checkpoint).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory")
    p.add_argument(
        "--prompt", action="append", default=None, help="prompt to continue (repeat for several; default: a newline)"
    )
    d = SampleConfig()  # the speedrun's samples stage uses the same defaults
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="tokens per sample")
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=d.top_k, help="sample among the k most likely tokens, 0 = all")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0 = off)")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    p.add_argument(
        "--seed", type=int, default=TrainConfig.seed, help="random seed (the speedrun samples with train.seed)"
    )
    p.add_argument("--truncate", action="store_true", help="left-truncate a prompt longer than the context")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.commands._common import load_for_inference
    from llmkit.infer.engine import whole_characters

    lm = load_for_inference(args)
    prompts = args.prompt or ["\n"]
    results = lm.generate(
        prompts,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        n=args.num_samples,
        truncate_prompt=args.truncate,
        return_ids=True,
    )
    for prompt, outs in zip(prompts, results, strict=True):
        for i, completion in enumerate(outs if args.num_samples > 1 else [outs]):
            head = f"--- sample {i + 1}/{args.num_samples}" if args.num_samples > 1 else "---"
            print(head)
            print(prompt + whole_characters(lm.tokenizer, completion.token_ids), flush=True)
    return 0
