"""The ``samples`` stage: the preset's prompts continued by the base model (the inference engine)."""

from __future__ import annotations

import json

from llmkit.console import say
from llmkit.files import atomic_write_json
from llmkit.stages import ReportSections, Stage, StageContext


def _run(ctx: StageContext) -> None:
    import llmkit

    cfg = ctx.cfg
    lm = llmkit.load(ctx.path("base"), device="cpu", inference_only=True)
    texts = lm.generate(
        list(cfg.sample.prompts),
        max_new_tokens=cfg.sample.max_new_tokens,
        temperature=cfg.sample.temperature,
        top_k=cfg.sample.top_k,
        seed=cfg.train.seed,
    )
    samples = [{"prompt": p, "text": t} for p, t in zip(cfg.sample.prompts, texts, strict=True)]
    ctx.path("samples").mkdir(exist_ok=True)
    atomic_write_json(ctx.path("samples/base.json"), samples)
    for s in samples:
        say(f"sample: {s['prompt']}{s['text'][:200]!r}")


def _report(ctx: StageContext) -> ReportSections:
    return {"Samples": json.loads(ctx.path("samples/base.json").read_text(encoding="utf-8"))}


STAGE = Stage(
    name="samples",
    summary="continue the preset's sample prompts with the base model",
    reads=("base",),
    writes=("samples",),
    run=_run,
    report=_report,
)
