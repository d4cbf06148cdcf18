"""Cleaning pretraining text: one module per concern, run by one engine (see docs/data-cleaning.md).

``normalise`` (mojibake, Unicode, whitespace), ``html`` (trafilatura), ``langid`` (py3langid,
mixed-language aware), ``quality`` (Gopher/C4 rules, Chinese-aware), ``repetition`` (Gopher
repetition rules), ``pii`` (scrubbing), ``decontaminate`` (n-gram overlap with evaluation items,
given as an argument), ``dedup`` (exact + MinHash LSH), ``mix`` (per-source epochs/weights).
``steps`` applies them to one document; ``runner`` (local, resumable, multi-process) or
``datatrove_engine`` (datatrove executors: local, Slurm, Ray) run them over a corpus; ``report``
writes counts, examples, histograms and the data card.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from llmkit.config import CleanConfig, DataConfig
from llmkit.data.clean import runner
from llmkit.data.clean.runner import load_report

__all__ = ["clean_corpus", "load_report"]


def clean_corpus(
    sources: list[str],
    out_dir: Path,
    cfg: CleanConfig,
    data_cfg: DataConfig | None = None,
    eval_texts: Iterable[str] | None = None,
    show_progress: bool | None = None,
) -> dict:
    """Clean ``sources`` into ``out_dir/corpus`` with the engine ``cfg.engine`` names and return the
    report (see :func:`.runner.clean_corpus` and :func:`.datatrove_engine.clean_with_datatrove`)."""
    if cfg.engine == "datatrove":
        from llmkit.data.clean.datatrove_engine import clean_with_datatrove
        from llmkit.data.clean.steps import validate

        validate(cfg)
        return clean_with_datatrove(sources, out_dir, cfg, data_cfg, eval_texts, show_progress)
    return runner.clean_corpus(sources, out_dir, cfg, data_cfg, eval_texts, show_progress)
