"""The ``clean`` stage: the preset's sources -> ``clean/corpus/<source>/part-*.jsonl``, cleaned,
deduplicated, decontaminated against the task suite's test items and mixed (:mod:`llmkit.data.clean`).

When ``clean`` is in ``pipeline.stages`` the ``data`` stage reads the cleaned corpus instead of
``data.sources`` (:func:`cleaned_data_config`), one directory per source, so validation is still
reported per source. Decontamination uses the test items of the task suite (``llmkit.tasks``); the
data layer itself never imports tasks, the items are passed in.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from llmkit.config import DataConfig, RunConfig
from llmkit.console import say
from llmkit.stages import ReportSections, Stage, StageContext

EVAL_ITEMS_PER_TASK = 500
"""Test items per task that the corpus is decontaminated against."""


def evaluation_texts(n: int = EVAL_ITEMS_PER_TASK) -> list[str]:
    """Prompts and reference solutions of the task suite's test split (seed 0, as evaluation uses).

    Corpus tasks are left out: their test items are lines of the documents the run holds out for
    validation, which are never trained on, and matching them would delete those very documents."""
    from llmkit.tasks import list_tasks

    texts: list[str] = []
    for task in list_tasks():
        if task.family == "corpus":
            continue
        for ex in task.make("test", n, seed=0):
            texts += [t for t in (ex.prompt, ex.solution, *(ex.choices or ())) if t]
    return texts


def cleaned_data_config(cfg: RunConfig, run_dir: Path) -> DataConfig:
    """``cfg.data`` reading the clean stage's output: one source per cleaned source directory."""
    from llmkit.data.clean.runner import load_report

    report = load_report(Path(run_dir) / "clean")
    if report is None:
        from llmkit.errors import DataError

        raise DataError(f"{Path(run_dir) / 'clean'} has no cleaned corpus; run the clean stage (`--from clean`)")
    sources = [str(Path(run_dir) / "clean" / "corpus" / label) for label in report["sources"]]
    return dataclasses.replace(cfg.data, sources=sources, text_field="text", max_documents=0, strict=True)


def _run(ctx: StageContext) -> None:
    from llmkit.data.clean import clean_corpus

    cfg = ctx.cfg
    texts = evaluation_texts() if cfg.clean.decontaminate else []
    r = clean_corpus(cfg.data.sources, ctx.path("clean"), cfg.clean, cfg.data, texts, show_progress=sys.stderr.isatty())
    for label, warnings in r["warnings"].items():  # bad bytes and malformed lines, as the data stage says them
        for w in warnings:
            say(f"warning: {label}: {w}")
    kept = sum(p["documents_kept"] for p in r["sources"].values())
    total = sum(p["documents_in"] for p in r["sources"].values())
    say(f"clean: kept {kept:,} of {total:,} documents ({sum(r['seconds'].values()):.1f}s) -> {ctx.path('clean')}")


def _report(ctx: StageContext) -> ReportSections:
    from llmkit.data.clean.report import markdown
    from llmkit.data.clean.runner import load_report

    r = load_report(ctx.path("clean"))
    text = (
        markdown(r)
        .replace("](lengths.png)", "](clean/lengths.png)")
        .replace("](languages.png)", "](clean/languages.png)")
    )
    return {"Cleaning": text + "\n\nData card: `clean/DATACARD.md`."}


STAGE = Stage(
    name="clean",
    summary="clean, deduplicate, decontaminate and mix the sources into clean/corpus/",
    reads=(),
    writes=("clean",),
    run=_run,
    report=_report,
    settings=("clean", "data"),
)
