"""``llmkit sft BASE --data ... --out DIR``: supervised fine-tuning of any checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 52  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    from llmkit.config import overrides_help

    p = sub.add_parser(
        "sft",
        help="fine-tune a checkpoint on conversations (chat data, the task suite); full or LoRA",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Supervised fine-tuning: assistant-only loss, packed conversations, held-out task accuracy "
        "through the inference engine. Resumes from OUT/checkpoints when re-run. Settings are the sft.* fields "
        "below, written right after BASE: llmkit sft BASE sft.max_steps=500 sft.lr=5e-4 --data d.jsonl --out DIR.",
        epilog=overrides_help(),
    )
    p.add_argument("base", type=Path, help="base checkpoint directory (llmkit or a local Llama/Qwen2/Mistral)")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="PATH[@WEIGHT]",
        help="chat data (JSONL/JSON/Parquet, saved dataset, hf:NAME); repeat to mix by weight",
    )
    p.add_argument(
        "--tasks",
        default=None,
        help="comma-separated suite tasks to train on (default: none with --data, else the sft.tasks list)",
    )
    p.add_argument("--eval-tasks", default=None, help="comma-separated tasks for held-out accuracy (default: --tasks)")
    p.add_argument("--out", type=Path, required=True, help="output directory (the fine-tuned checkpoint)")
    p.add_argument("--lora", type=int, default=None, metavar="RANK", help="train LoRA adapters of this rank")
    p.add_argument("--epochs", type=float, default=None, help="passes over the data (overrides sft.max_steps)")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed record instead of skipping it")
    p.add_argument("overrides", nargs="*", metavar="section.field=value", help="e.g. sft.lr=5e-4 train.device=cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from llmkit.checkpoint import check_checkpoint, load_model
    from llmkit.config import resolve
    from llmkit.console import say
    from llmkit.tokenizer import Tokenizer
    from llmkit.train.finetune import build_mix, finetune

    check_checkpoint(args.base)
    cfg = resolve("cpu-tiny", args.overrides)
    sft = cfg.sft
    names = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    tasks = names(args.tasks) if args.tasks is not None else ([] if args.data else list(sft.tasks))
    sft = dataclasses.replace(sft, data=list(sft.data) + list(args.data), tasks=tasks)
    if args.lora is not None:
        sft.lora_rank = args.lora
    if args.epochs is not None:
        sft.epochs = args.epochs
    sft.validate()
    tok = Tokenizer.load(args.base)
    model = load_model(args.base, device="cpu")
    seq_len = sft.seq_len or model.config.max_position_embeddings
    data = build_mix(tok, sft, seq_len, cfg.train.seed, strict=args.strict)
    if args.eval_tasks is not None:
        from llmkit.train.finetune import task_examples

        data.eval_examples = task_examples(names(args.eval_tasks), "test", sft.eval_examples, cfg.train.seed)
    for name, st in data.stats.items():
        say(f"sft data: {name}: {st.summary()}")
    finetune(args.base, args.out, sft, sft.train_config(cfg.train, seq_len), data, tok, model=model)
    say(f"sft: chat with it: llmkit chat {args.out}")
    return 0
