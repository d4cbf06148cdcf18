"""The pipeline: the preset's ordered list of stages (``pipeline.stages``), run in one run directory.

Each stage (:mod:`llmkit.stages`) is skipped when it is complete, so re-running the same command
resumes where it stopped (training stages also resume mid-way from their latest checkpoint).
``until`` stops after a stage; ``start_from`` deletes a stage's outputs and those of every later
stage, then runs them again. Under ``torchrun`` rank 0 runs the single-process stages while the
others wait, and every process runs the training stages.

Layout of ``runs/<name>/``: ``config.yaml`` (the resolved config: the run can be repeated from
it), ``stages.json`` (each stage's wall time, summed over resumed invocations, and when it
finished), ``report.md`` and ``report.html`` (every finished stage's sections, the stage times and
the config; ``llmkit report RUN`` rewrites both), and the paths each stage ``writes`` (``llmkit
speedrun --list`` prints them for a preset and run directory).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import yaml

from llmkit.config import RunConfig
from llmkit.console import say
from llmkit.errors import ConfigError
from llmkit.files import atomic_write_json
from llmkit.stages import Stage, StageContext, get_stages
from llmkit.train import distributed

RECORD = "stages.json"


def _diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _with_defaults(saved: dict, defaults: dict) -> dict:
    """``saved`` with the fields it predates filled in with their defaults: a field added to llmkit
    after the run started defaults to the behaviour the run had, so upgrading is not a change."""
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], value)
    return out


def init_run_dir(cfg: RunConfig, run_dir: Path, to_run: Sequence[Stage] = ()) -> None:
    """Create the run directory and save the resolved config; refuse to mix configs in one run.

    Sections that only change what runs or is shown (``pipeline``, ``sample``, ``eval``) are always
    free; so are the ``settings`` of the stages in ``to_run`` (not yet complete, or run again with
    ``--from``), whose output is still to be written. A change to what a finished stage was built
    from is refused."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: is a file, not a run directory; give --run-dir a directory")
    path = run_dir / "config.yaml"
    current = cfg.to_dict()
    if path.is_file():
        saved = _with_defaults(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, RunConfig().to_dict())
        shown = ("pipeline.", "sample.", "eval.")
        free = (*shown, *(f"{section}." for stage in to_run for section in stage.settings))
        changed = [k for k in _diff(saved, current) if not k.startswith(free) and k != "preset"]
        if changed:
            owners = [s.name for s in get_stages(cfg.pipeline.stages) if changed[0].split(".")[0] in s.settings]
            redo = f"run again with `--from {owners[0]}` to redo what it affects, " if owners else ""
            raise ConfigError(
                f"{path}: this run was started with a different config ({', '.join(changed[:4])}); "
                f"{redo}use a new --run-dir, or delete the run directory to start over"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(path)


def read_record(run_dir: Path) -> dict[str, dict]:
    path = Path(run_dir) / RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def is_complete(stage: Stage, run_dir: Path, record: dict | None = None) -> bool:
    record = read_record(run_dir) if record is None else record
    entry = record.get(stage.name, {})
    return bool(entry.get("finished")) and all((run_dir / rel).exists() for rel in stage.writes)


def _note(run_dir: Path, name: str, seconds: float, finished: bool) -> None:
    """Add ``seconds`` to the stage's time; mark it finished (or keep the partial time of a run that
    stopped, so a resumed stage reports the time it really took)."""
    record = read_record(run_dir)
    entry = record.get(name, {})
    entry["seconds"] = entry.get("seconds", 0.0) + seconds
    if finished:
        entry["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record[name] = entry
    atomic_write_json(run_dir / RECORD, record)


def _forget(run_dir: Path, stages: list[Stage]) -> None:
    """Delete the outputs and the record of ``stages`` (for ``--from``)."""
    record = read_record(run_dir)
    for stage in stages:
        for rel in stage.writes:
            path = run_dir / rel
            if path.is_dir():
                shutil.rmtree(path)
                say(f"{stage.name}: removed {path}")
            elif path.exists():
                path.unlink()
                say(f"{stage.name}: removed {path}")
        record.pop(stage.name, None)
    atomic_write_json(run_dir / RECORD, record)


def _index(stages: list[Stage], name: str, flag: str) -> int:
    names = [s.name for s in stages]
    if name not in names:
        raise ConfigError(f"{flag} {name!r} is not a stage of this run; pipeline.stages: {', '.join(names)}")
    return names.index(name)


def run(cfg: RunConfig, run_dir: Path, until: str | None = None, start_from: str | None = None) -> Path | None:
    """Run the preset's stages in ``run_dir`` (see the module docstring); returns report.md's path on
    rank 0, None elsewhere."""
    stages = get_stages(cfg.pipeline.stages)
    last = _index(stages, until, "--until") if until else len(stages) - 1
    first = _index(stages, start_from, "--from") if start_from else 0
    if first > last:
        raise ConfigError(
            f"--from {start_from!r} comes after --until {until!r}; stages: " + ", ".join(s.name for s in stages)
        )
    info = distributed.setup(cfg.train.device)
    ctx = StageContext(cfg, Path(run_dir), info)
    if info.is_main:
        record = read_record(ctx.run_dir)
        to_run = [
            s for i, s in enumerate(stages) if i >= first and (start_from or not is_complete(s, ctx.run_dir, record))
        ]
        init_run_dir(cfg, ctx.run_dir, to_run)
        if start_from:
            _forget(ctx.run_dir, stages[first:])
    distributed.barrier(info)
    for stage in stages[: last + 1]:
        if is_complete(stage, ctx.run_dir):
            if info.is_main:
                say(f"{stage.name}: complete; skipping (`--from {stage.name}` runs it again)")
            continue
        if stage.all_ranks or info.is_main:
            t0 = time.perf_counter()
            try:
                stage.run(ctx)
            except BaseException:
                if info.is_main:
                    _note(ctx.run_dir, stage.name, time.perf_counter() - t0, finished=False)
                raise
            if info.is_main:
                _note(ctx.run_dir, stage.name, time.perf_counter() - t0, finished=True)
        distributed.barrier(info)
    if not info.is_main:
        return None
    path = write_run_report(cfg, ctx.run_dir)
    say(f"report: {path}")
    return path


def describe(cfg: RunConfig, run_dir: Path) -> str:
    """The run's stages as a table: whether each is complete in ``run_dir``, what it writes and
    reads there, and what it does (``llmkit speedrun --list``)."""
    record = read_record(run_dir)
    rows = [("stage", "state", "writes", "reads", "what it does")]
    for stage in get_stages(cfg.pipeline.stages):
        state = "complete" if is_complete(stage, Path(run_dir), record) else "to run"
        paths = [", ".join(f"{p}/" for p in ps) or "-" for ps in (stage.writes, stage.reads)]
        rows.append((stage.name, state, *paths, stage.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows)


def write_run_report(cfg: RunConfig, run_dir: Path) -> Path:
    """``report.md`` from every finished stage's own report, then each stage's time."""
    from llmkit.report import write_report

    info = distributed.DistInfo()
    ctx = StageContext(cfg, Path(run_dir), info)
    record = read_record(ctx.run_dir)
    sections: dict = {}
    times = {}
    for stage in get_stages(cfg.pipeline.stages):
        if not is_complete(stage, ctx.run_dir, record):
            continue
        if stage.report:
            sections.update(stage.report(ctx))
        times[stage.name] = f"{record[stage.name]['seconds']:.0f} s"
    if times:
        total = sum(record[name]["seconds"] for name in times)
        times["total"] = f"{total:.0f} s ({total / 60:.1f} min)"
        sections["Stage times"] = times
    return write_report(ctx.run_dir, sections)
