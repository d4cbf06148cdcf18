"""The ``rl`` stage: GRPO with the task suite's verifiers as rewards, from the SFT model -> ``rl/``.

GRPO is the RL method of the speedrun because its reward is exact (a verifier, no reward model to
train or to be gamed) and it needs no value model; docs/alignment.md has the measurements behind
the choice. The stage trains on ``grpo.prompts`` (default: the SFT stage's suite tasks), then
scores the RL model on the very held-out examples the SFT stage scored, so the report's accuracy
table gains an RL column that compares like with like. The trained tasks are also scored on
``grpo.eval_prompts`` more held-out examples before and after training (the SFT stage's few per
task cannot resolve a change of a few points), with the change in standard errors. Writes
``rl/`` (the model in HF layout, checkpoints, metrics.jsonl, loss.png) and ``rl/eval_rl.json``.
"""

from __future__ import annotations

import json

from llmkit.console import say
from llmkit.files import atomic_write_json
from llmkit.stages import ReportSections, Stage, StageContext
from llmkit.stages.sft import ACCURACY_HEADING, accuracy_table


def _prompts(cfg) -> str:
    return cfg.grpo.prompts or "tasks:" + ",".join(cfg.sft.tasks)


def run_rl(ctx: StageContext) -> None:
    import dataclasses

    from llmkit.checkpoint import load_model
    from llmkit.tasks import Example
    from llmkit.tasks.runner import evaluate_tasks
    from llmkit.tokenizer import Tokenizer
    from llmkit.train.grpo import run_grpo
    from llmkit.train.task_data import examples, task_names

    cfg, info = ctx.cfg, ctx.info
    sft, out = ctx.path("sft"), ctx.path("rl")
    cfg.grpo.prompts = _prompts(cfg)
    names = task_names(cfg.grpo.prompts) or []
    per_task = -(-cfg.grpo.eval_prompts // max(1, len(names)))
    focus = examples(names, "test", per_task, cfg.train.seed) if per_task else []
    tok = Tokenizer.load(sft)
    before = evaluate_tasks(load_model(sft), tok, focus) if focus and info.is_main else None
    # the stage scores the held-out prompts itself, before and after, with the one task runner
    run_cfg = dataclasses.replace(cfg, grpo=dataclasses.replace(cfg.grpo, eval_prompts=0))
    summary = run_grpo(sft, out, run_cfg)
    if not info.is_main:
        return
    model = load_model(out)
    held = [Example.from_dict(d) for d in json.loads((sft / "eval_sft.json").read_text("utf-8"))["examples"]]
    result = evaluate_tasks(model, tok, held, mode="chat")
    after = evaluate_tasks(model, tok, focus) if focus else None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text("utf-8").splitlines()]
    rewards = [r["reward"] for r in rows if "reward" in r]
    atomic_write_json(
        out / "eval_rl.json",
        {
            "scores": result.table(),
            "responses": result.responses,
            "trained_tasks": {"sft": before.table(), "rl": after.table()} if before and after else {},
            "train": {**summary, "tasks": cfg.grpo.prompts, "first_reward": rewards[:1], "last_reward": rewards[-1:]},
        },
    )
    if before and after:
        for name, score in after.scores.items():
            say(f"rl: {name} held-out accuracy {accuracy_change(score.to_dict(), before.scores[name].to_dict())}")
    mean = sum(s.accuracy for s in result.scores.values()) / max(1, len(result.scores))
    say(f"rl: mean held-out accuracy {100 * mean:.1f}% -> {out}")


def accuracy_change(after: dict, before: dict) -> str:
    """``+12.0 pts (+2.4 SE)``: the accuracy difference in points and in standard errors of the
    difference (two independent samples), the measure of whether a stage changed a skill."""
    se = (after["stderr"] ** 2 + before["stderr"] ** 2) ** 0.5
    diff = after["accuracy"] - before["accuracy"]
    return f"{100 * diff:+.1f} pts ({diff / se:+.1f} SE)" if se else f"{100 * diff:+.1f} pts"


def _change_table(sft: dict, rl: dict, trained: set[str]) -> str:
    lines = ["| task | n | SFT | RL | RL - SFT |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in sorted(sft, key=lambda n: (n not in trained, n)):
        s, r = sft[name], rl.get(name)
        if r:
            mark = " (trained)" if name in trained else ""
            cells = [f"{100 * x['accuracy']:.1f}% ± {100 * x['stderr']:.1f}" for x in (s, r)]
            lines.append(f"| {name}{mark} | {s['n']} | {cells[0]} | {cells[1]} | {accuracy_change(r, s)} |")
    return "\n".join(lines)


def _report(ctx: StageContext) -> ReportSections:
    base = json.loads(ctx.path("sft/eval_base.json").read_text("utf-8"))
    sft = json.loads(ctx.path("sft/eval_sft.json").read_text("utf-8"))
    rl = json.loads(ctx.path("rl/eval_rl.json").read_text("utf-8"))
    train = rl["train"]
    sections: ReportSections = {
        ACCURACY_HEADING: accuracy_table(base["scores"], sft["scores"], base["few_shot"], {"RL": rl["scores"]}),
        "RL training (GRPO, verifier rewards)": {
            "tasks": train["tasks"].removeprefix("tasks:"),
            "steps": train["step"],
            "mean reward, first rollout round": train["first_reward"][0] if train["first_reward"] else "-",
            "mean reward, last rollout round": train["last_reward"][0] if train["last_reward"] else "-",
            "training time (s)": train["train_seconds"],
        },
    }
    trained = set(train["tasks"].removeprefix("tasks:").split(","))
    if rl.get("trained_tasks"):
        sections["RL effect on the trained tasks (held-out, n per task = grpo.eval_prompts)"] = _change_table(
            rl["trained_tasks"]["sft"], rl["trained_tasks"]["rl"], trained
        )
    sections["RL effect on every task (the held-out examples of the table above)"] = _change_table(
        sft["scores"], rl["scores"], trained
    )
    if ctx.path("rl/loss.png").is_file():
        sections["RL curves"] = "![rl](rl/loss.png)"
    return sections


STAGE = Stage(
    name="rl",
    summary="GRPO on the task suite with verifier rewards, from the SFT model; held-out accuracy beside SFT's",
    reads=("sft",),
    writes=("rl",),
    run=run_rl,
    report=_report,
    all_ranks=True,
    settings=("grpo",),
)
