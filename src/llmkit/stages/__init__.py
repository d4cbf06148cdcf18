"""Stages as data: what each step of a run reads, writes and reports, and how it runs.

A :class:`Stage` is a description, not a framework: a name, the run-directory paths it reads and
writes, a ``run`` function and a ``report`` function. The speedrun (:mod:`llmkit.pipeline`) runs the
ordered list of stage names from the preset's ``pipeline.stages``; ``llmkit pretrain`` and the other
stage verbs run the same descriptions. Adding a stage means adding one module to this package that
defines ``STAGE = Stage(...)``, and naming it in the presets that should run it; the pipeline's
control flow does not change.

A stage module only glues the run directory to work that lives in its own room (``train/``,
``eval/``, ``data/``...): it finds its inputs by path, calls that work, and returns report sections.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from llmkit.config import RunConfig
from llmkit.errors import ConfigError
from llmkit.train.distributed import DistInfo


@dataclass
class StageContext:
    """What a stage gets: the resolved config, the run directory and the process's place in a
    ``torchrun`` job (rank 0 alone runs stages that are not ``all_ranks``)."""

    cfg: RunConfig
    run_dir: Path
    info: DistInfo

    def path(self, rel: str) -> Path:
        return self.run_dir / rel


ReportSections = dict[str, Any]
"""Report headings -> a dict (rendered as a two-column table), a list of ``{"prompt", "text"}``
samples, or a markdown string (tables, images with paths relative to the run directory)."""


@dataclass(frozen=True)
class Stage:
    """One step of a run. ``writes`` are run-directory paths the stage owns: a stage is complete when
    the pipeline recorded it as finished and all of them exist, and ``--from`` deletes them."""

    name: str
    summary: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    run: Callable[[StageContext], None]
    report: Callable[[StageContext], ReportSections] | None = None
    all_ranks: bool = False
    """Run on every ``torchrun`` process (training stages); otherwise rank 0 runs it, the rest wait."""
    settings: tuple[str, ...] = ()
    """Config sections the stage's output depends on: a run may change them while the stage is still
    to run (or is run again with ``--from``), and only then."""


@cache
def registry() -> dict[str, Stage]:
    """Every stage defined in this package, by name (modules define ``STAGE``)."""
    found: dict[str, Stage] = {}
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("_"):
            continue
        stage = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "STAGE", None)
        if isinstance(stage, Stage):
            found[stage.name] = stage
    return found


def get_stages(names: list[str], where: str = "pipeline.stages") -> list[Stage]:
    """The named stages in order; an unknown name is a one-line error that lists the known ones."""
    known = registry()
    out = []
    for name in names:
        if name not in known:
            raise ConfigError(f"{where}: unknown stage {name!r}; stages: {', '.join(known)}")
        out.append(known[name])
    return out
