"""``llmkit grpo MODEL --out DIR``: group-relative policy optimisation with verifiable rewards."""

from __future__ import annotations

ORDER = 63  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    from llmkit.commands._finetune import add_finetune_args

    p = sub.add_parser(
        "grpo",
        help="RL with verifiable rewards (GRPO): sample groups, reward them, push towards the better ones",
        description="Train a chat or base model with GRPO: for each prompt sample grpo.samples completions "
        "from the current weights (llmkit's engine), score each with a reward function, and raise the "
        "likelihood of the completions that beat their group's mean. Settings: grpo.* (see below).",
    )
    add_finetune_args(p)
    p.add_argument(
        "--prompts",
        default=None,
        help="JSONL of prompts (a 'prompt' field, text or messages; other fields "
        "go to the reward function) or tasks:NAME,NAME (the task suite)",
    )
    p.add_argument(
        "--reward",
        default=None,
        help="path/to/file.py:function called as fn(prompt=, completion=, **fields) -> "
        "float, or 'verifier' (the task suite's answer checkers)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.commands._finetune import resolve_finetune
    from llmkit.train.grpo import run_grpo

    cfg = resolve_finetune(args, "grpo", prompts=args.prompts, reward=args.reward)
    run_grpo(args.model, args.out, cfg)
    return 0
