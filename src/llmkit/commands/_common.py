"""Arguments shared by the verbs that run pipeline stages (preset, run directory, overrides)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmkit.config import RunConfig, list_presets, overrides_help, resolve


def add_run_args(p: argparse.ArgumentParser, default_preset: str = "cpu-tiny") -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = overrides_help()
    p.add_argument(
        "--preset",
        default=default_preset,
        help=f"config preset ({', '.join(list_presets())}) or a path to a YAML file (default: {default_preset})",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run directory (default: runs/<preset>); re-running resumes where it stopped",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="section.field=value",
        help="config overrides, e.g. train.max_steps=200 model.hidden_size=128",
    )


def resolve_run(args) -> tuple[RunConfig, Path]:
    cfg = resolve(args.preset, args.overrides)
    run_dir = args.run_dir or Path("runs") / Path(args.preset).stem
    return cfg, run_dir


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Flags of the verbs that load a checkpoint to generate: device, dtype, RoPE scaling."""
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights' dtype; auto = bfloat16 where the hardware computes in it natively "
        "(CPUs with AVX512-BF16 or AMX, recent GPUs), else float32 (default: auto)",
    )
    p.add_argument(
        "--adapter",
        type=Path,
        default=None,
        help="a LoRA adapter directory (PEFT format) to run on top of the checkpoint, unmerged",
    )
    p.add_argument(
        "--rope-scaling",
        default=None,
        metavar="TYPE:FACTOR",
        help="read past the trained context: linear:F, dynamic:F, yarn:F or llama3:F",
    )


def load_for_inference(args):
    """The checkpoint of ``args`` loaded for generation only (weights held once, packed)."""
    import llmkit

    lm = llmkit.load(
        args.checkpoint,
        device=args.device,
        dtype=args.dtype,
        inference_only=True,
        adapter=getattr(args, "adapter", None),
    )
    if args.rope_scaling:
        from llmkit.model.rope import parse_rope_scaling

        lm.set_rope_scaling(parse_rope_scaling(args.rope_scaling))
    return lm
