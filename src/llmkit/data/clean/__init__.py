"""Cleaning pretraining text: one module per concern, run by one engine (see docs/data-cleaning.md).

``normalise`` (mojibake, Unicode, whitespace), ``html`` (trafilatura), ``langid`` (py3langid,
mixed-language aware), ``quality`` (Gopher/C4 rules, Chinese-aware), ``repetition`` (Gopher
repetition rules), ``pii`` (scrubbing), ``decontaminate`` (n-gram overlap with evaluation items,
given as an argument), ``dedup`` (exact + MinHash LSH), ``mix`` (per-source epochs/weights).
``steps`` applies them to one document; ``runner`` (local, resumable, multi-process) or
``datatrove_engine`` (datatrove executors: local, Slurm, Ray) run them over a corpus; ``report``
writes counts, examples, histograms and the data card.
"""

from llmkit.data.clean.runner import clean_corpus, load_report

__all__ = ["clean_corpus", "load_report"]
