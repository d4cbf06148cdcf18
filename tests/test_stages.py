"""Stages as data: every preset's stage list is runnable in order, and naming a stage that does not
exist (in --until, --from or pipeline.stages) is a one-line error listing the stages, before any work."""

import pytest

from llmkit.cli import main
from llmkit.config import list_presets, resolve
from llmkit.stages import get_stages, registry


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_lists_known_stages_in_an_order_that_can_run(preset):
    stages = get_stages(resolve(preset).pipeline.stages)
    written: set[str] = set()
    for stage in stages:
        missing = [rel for rel in stage.reads if rel not in written]
        assert not missing, f"{preset}: stage {stage.name} reads {missing}, which no earlier stage writes"
        written |= set(stage.writes)


def test_stages_own_distinct_paths():
    owners: dict[str, str] = {}
    for stage in registry().values():
        for rel in stage.writes:
            assert rel not in owners, f"{rel} is written by both {owners[rel]} and {stage.name}"
            owners[rel] = stage.name


def _error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--until", "nope"], "--until 'nope'"),
        (["--from", "nope"], "--from 'nope'"),
        (["pipeline.stages=[data,nope]"], "pipeline.stages: unknown stage 'nope'"),
        (["--from", "samples", "--until", "data"], "comes after"),
    ],
)
def test_unknown_or_misordered_stage_names_are_one_line_errors(tmp_path, capsys, flags, needle):
    run_dir = tmp_path / "run"
    line = _error_line(capsys, ["speedrun", "--preset", "cpu-micro", "--run-dir", str(run_dir), *flags])
    assert needle in line and all(name in line for name in ("data", "pretrain", "samples")), line
    assert not run_dir.exists(), "nothing may be written before the stage names are checked"
