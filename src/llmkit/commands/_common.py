"""Arguments shared by the verbs that run pipeline stages (preset, run directory, overrides)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmkit.config import RunConfig, list_presets, overrides_help, resolve


def add_run_args(p: argparse.ArgumentParser, default_preset: str = "cpu-tiny") -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = overrides_help()
    p.add_argument("--preset", default=default_preset,
                   help=f"config preset ({', '.join(list_presets())}) or a path to a YAML file "
                        f"(default: {default_preset})")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="run directory (default: runs/<preset>); re-running resumes where it stopped")
    p.add_argument("overrides", nargs="*", metavar="section.field=value",
                   help="config overrides, e.g. train.max_steps=200 model.hidden_size=128")


def resolve_run(args) -> tuple[RunConfig, Path]:
    cfg = resolve(args.preset, args.overrides)
    run_dir = args.run_dir or Path("runs") / Path(args.preset).stem
    return cfg, run_dir
