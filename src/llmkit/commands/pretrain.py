"""``llmkit pretrain``: corpus -> tokenizer -> shards -> pretrained base model in <run-dir>/base."""

from __future__ import annotations

import os

from llmkit.commands._common import add_run_args, resolve_run


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a base model (prepares data and tokenizer if needed)",
        description="Pretrain a decoder-only transformer on the preset's corpus. Works under "
        "`torchrun --nproc_per_node=N -m llmkit.cli pretrain ...` for DDP. "
        "Killed runs resume from the latest checkpoint when re-run.",
    )
    add_run_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.pipeline import run_pretrain, say

    cfg, run_dir = resolve_run(args)
    result = run_pretrain(cfg, run_dir)
    if result is not None and result.final_eval and os.environ.get("RANK", "0") == "0":
        say(
            "pretrain: "
            + ", ".join(f"{k} {v:.4f}" for k, v in result.final_eval.items())
            + f", {result.tokens_per_s:,.0f} tok/s -> {run_dir / 'base'}"
        )
    return 0
