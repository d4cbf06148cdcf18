"""``llmkit ppo MODEL --out DIR``: InstructGPT-style RLHF against a reward model or function."""

from __future__ import annotations

ORDER = 62  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    from llmkit.commands._finetune import add_finetune_args

    p = sub.add_parser(
        "ppo",
        help="RLHF with PPO: a value head, GAE and a KL penalty to the starting model",
        description="Train with PPO (InstructGPT): sample completions from the current weights, score them with a "
        "reward model (llmkit reward) or a reward function, subtract a per-token KL penalty to the starting "
        "model, and update policy and value head with clipped losses over several epochs. Settings: ppo.*.",
    )
    add_finetune_args(p)
    p.add_argument("--prompts", default=None, help="JSONL of prompts ('prompt': text or messages) or tasks:NAME,NAME")
    p.add_argument("--reward-model", default=None, help="reward model checkpoint (from llmkit reward)")
    p.add_argument("--reward", default=None, help="instead: path/to/file.py:function, or 'verifier'")
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.commands._finetune import resolve_finetune
    from llmkit.train.ppo import run_ppo

    cfg = resolve_finetune(args, "ppo", prompts=args.prompts, reward_model=args.reward_model, reward=args.reward)
    run_ppo(args.model, args.out, cfg)
    return 0
