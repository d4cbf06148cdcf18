"""``llmkit pretrain``: the preset's stages up to ``pretrain`` (data, tokenizer, shards, base model)."""

from __future__ import annotations

from llmkit.commands._common import add_run_args, resolve_run

ORDER = 30  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a base model (prepares data and tokenizer if needed)",
        description="Pretrain a decoder-only transformer on the preset's corpus: runs the preset's stages up to "
        "and including `pretrain`. Works under `torchrun --nproc_per_node=N -m llmkit.cli pretrain ...` "
        "for DDP, or with train.parallel=fsdp for FSDP2 (docs/scaling-out.md). Killed runs resume from the latest "
        "checkpoint when re-run.",
    )
    add_run_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.errors import ConfigError
    from llmkit.pipeline import run as run_pipeline

    cfg, run_dir = resolve_run(args)
    if "pretrain" not in cfg.pipeline.stages:
        raise ConfigError(
            f"pipeline.stages ({', '.join(cfg.pipeline.stages)}) has no pretrain stage; add it or use llmkit speedrun"
        )
    run_pipeline(cfg, run_dir, until="pretrain")
    return 0
