"""``llmkit speedrun``: every stage of the preset in one command and one run directory."""

from __future__ import annotations

from llmkit.commands._common import add_run_args, resolve_run

ORDER = 40  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    p = sub.add_parser(
        "speedrun",
        help="run every stage of the preset: corpus, tokenizer, pretraining, samples, ..., report",
        description="Run the preset's stages (pipeline.stages) in one run directory and write report.md. "
        "Re-running the same command skips finished stages and resumes the one that stopped.",
    )
    add_run_args(p)
    p.add_argument("--until", metavar="STAGE", default=None, help="stop after this stage")
    p.add_argument(
        "--from",
        dest="start_from",
        metavar="STAGE",
        default=None,
        help="delete this stage's outputs and those of every later stage, then run them again",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="print the preset's stages (what each writes and reads in the run directory, whether it is "
        "complete) and exit",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.pipeline import describe
    from llmkit.pipeline import run as run_pipeline

    cfg, run_dir = resolve_run(args)
    if args.list:
        print(f"{run_dir} ({cfg.preset}):\n{describe(cfg, run_dir)}")
        return 0
    run_pipeline(cfg, run_dir, until=args.until, start_from=args.start_from)
    return 0
