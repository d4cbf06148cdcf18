"""Arguments shared by the post-training verbs (reward, dpo, ppo, grpo, distill): the starting
checkpoint, the output directory, the preset and ``section.field=value`` overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmkit.config import RunConfig, list_presets, overrides_help, resolve


def add_finetune_args(p: argparse.ArgumentParser, model: bool = True) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = overrides_help()
    if model:
        p.add_argument("model", type=Path, help="checkpoint to start from (e.g. runs/cpu-tiny/sft)")
    p.add_argument("--out", type=Path, required=True, help="output directory; re-running resumes from its checkpoints/")
    p.add_argument(
        "--preset",
        default="cpu-tiny",
        help=f"config preset for the train.* settings ({', '.join(list_presets())}) or a YAML file (default: cpu-tiny)",
    )
    p.add_argument(
        "--lora",
        type=int,
        default=None,
        metavar="RANK",
        help="train LoRA adapters of this rank instead of every weight",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="section.field=value",
        help="config overrides right after the checkpoint, e.g. dpo.beta=0.2 train.device=cpu",
    )


def resolve_finetune(args, section: str, **flags) -> RunConfig:
    """The preset + overrides, then each flag given on the command line set on ``section``."""
    cfg = resolve(args.preset, args.overrides)
    part = getattr(cfg, section)
    if args.lora is not None:
        part.lora_rank = args.lora
    for name, value in flags.items():
        if value is not None:
            setattr(part, name, str(value))
    return cfg
