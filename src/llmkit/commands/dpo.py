"""``llmkit dpo MODEL --data PAIRS --out DIR``: direct preference optimisation."""

from __future__ import annotations

ORDER = 61  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    from llmkit.commands._finetune import add_finetune_args

    p = sub.add_parser(
        "dpo",
        help="preference tuning with DPO (or IPO, cDPO, rDPO) against a frozen reference",
        description="Train on preference pairs with DPO: raise the likelihood of chosen answers over rejected "
        "ones relative to a frozen reference (by default the starting model), whose log-probabilities are "
        "computed once and cached in OUT/ref_logps.pt. Settings: dpo.*.",
    )
    add_finetune_args(p)
    p.add_argument(
        "--data",
        default=None,
        help="preference pairs: JSONL (prompt/chosen/rejected), a saved dataset, "
        "hf:NAME, or tasks:NAME,NAME (pairs made from the task suite)",
    )
    p.add_argument("--ref", default=None, help="reference checkpoint (default: MODEL as it starts)")
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.commands._finetune import resolve_finetune
    from llmkit.train.dpo import run_dpo

    cfg = resolve_finetune(args, "dpo", data=args.data, ref=args.ref)
    run_dpo(args.model, args.out, cfg)
    return 0
