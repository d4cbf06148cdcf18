"""``llmkit speedrun``: the whole pipeline in one command and one run directory."""

from __future__ import annotations

from llmkit.commands._common import add_run_args, resolve_run


def register(sub) -> None:
    p = sub.add_parser(
        "speedrun",
        help="run the whole pipeline: corpus, tokenizer, pretraining, samples, report",
        description="Fetch the corpus, train the tokenizer, shard, pretrain, sample and write "
        "report.md, all in one run directory. Re-running the same command resumes.",
    )
    add_run_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.pipeline import speedrun

    cfg, run_dir = resolve_run(args)
    speedrun(cfg, run_dir)
    return 0
