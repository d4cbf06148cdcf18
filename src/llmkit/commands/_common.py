"""Arguments shared by the verbs that run pipeline stages (preset, run directory, overrides)."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from llmkit.config import RunConfig, list_presets, overrides_help, resolve
from llmkit.errors import LLMKitError


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (argparse turns the error into a usage line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Ends an option's help with ``(default: X)`` unless the help already names its default or
    the default says nothing (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if not action.option_strings or "(default" in text or d is None or d is False or d == [] or d == "==SUPPRESS==":
            return text
        return text + " (default: %(default)s)"


_CONFIG_FIELDS = "(every config field with its value in the chosen preset)"
"""The epilog of verbs with a preset; :class:`_ConfigHelp` replaces it when help is shown."""


class _ConfigHelp(argparse.RawDescriptionHelpFormatter):
    """Help of a verb that takes a preset: the epilog lists every config field with the value the
    preset gives it, computed only when help is printed (not on every start)."""

    def __init__(self, prog: str, preset: str, **kwargs):
        super().__init__(prog, **kwargs)
        self.preset = preset

    def add_text(self, text: str | None) -> None:
        if text is _CONFIG_FIELDS:
            try:
                text = overrides_help(self.preset)
            except LLMKitError as e:
                text = f"config fields: {e}"
        super().add_text(text)


class _PresetAction(argparse.Action):
    """``--preset NAME``; given before ``--help``, the help shows that preset's values."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        parser.formatter_class = functools.partial(_ConfigHelp, preset=values)


def add_run_args(p: argparse.ArgumentParser, default_preset: str = "cpu-tiny") -> None:
    p.formatter_class = functools.partial(_ConfigHelp, preset=default_preset)
    p.epilog = _CONFIG_FIELDS
    p.add_argument(
        "--preset",
        action=_PresetAction,
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
        "--kv-cache",
        default="auto",
        choices=["auto", "int8"],
        help="key/value cache storage: int8 holds about a quarter of fp32's bytes, for long contexts "
        "and large batches, at a small quality cost (default: auto, the compute dtype)",
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
    lm.engine.kv_cache = getattr(args, "kv_cache", "auto")
    return lm
