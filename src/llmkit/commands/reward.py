"""``llmkit reward MODEL --data PAIRS --out DIR``: a reward model from preference pairs."""

from __future__ import annotations

ORDER = 60  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    from llmkit.commands._finetune import add_finetune_args

    p = sub.add_parser(
        "reward",
        help="train a reward model (scalar head, Bradley-Terry) on preference pairs",
        description="Train a reward model: MODEL's body with a scalar head that learns to score chosen answers "
        "above rejected ones (Bradley-Terry loss). Saved as a Hugging Face LlamaForSequenceClassification "
        "(or Qwen2) with num_labels=1; reports held-out pairwise accuracy. Settings: reward.*.",
    )
    add_finetune_args(p)
    p.add_argument(
        "--data",
        default=None,
        help="preference pairs: JSONL (prompt/chosen/rejected), a saved dataset, hf:NAME, or tasks:NAME,NAME",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.commands._finetune import resolve_finetune
    from llmkit.train.reward import run_reward

    cfg = resolve_finetune(args, "reward", data=args.data)
    run_reward(args.model, args.out, cfg)
    return 0
