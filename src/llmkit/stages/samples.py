"""The ``samples`` stage: the preset's prompts continued by the base model (the inference engine).

Each prompt is sampled exactly as ``llmkit sample BASE --prompt P --seed <train.seed>`` would (same
engine, dtype, decoding options and seed), so a sample in the report can be reproduced and compared.
"""

from __future__ import annotations

import json
import sys

from llmkit.console import say
from llmkit.files import atomic_write_json
from llmkit.stages import ReportSections, Stage, StageContext


def _run(ctx: StageContext) -> None:
    import llmkit
    from llmkit.infer.engine import whole_characters

    cfg, opts = ctx.cfg, ctx.cfg.sample
    lm = llmkit.load(ctx.path("base"), dtype="auto", inference_only=True)  # as `llmkit sample` loads it
    samples = []
    for prompt in opts.prompts:
        completion = lm.generate(
            prompt,
            max_new_tokens=opts.max_new_tokens,
            temperature=opts.temperature,
            top_k=opts.top_k,
            seed=cfg.train.seed,
            return_ids=True,
        )
        samples.append({"prompt": prompt, "text": whole_characters(lm.tokenizer, completion.token_ids)})
    ctx.path("samples").mkdir(exist_ok=True)
    atomic_write_json(ctx.path("samples/base.json"), samples)
    for i, s in enumerate(samples, 1):
        say(f"sample {i} of {len(samples)}:")
        print(s["prompt"] + s["text"], file=sys.stderr, flush=True)


def _report(ctx: StageContext) -> ReportSections:
    return {"Samples": json.loads(ctx.path("samples/base.json").read_text(encoding="utf-8"))}


STAGE = Stage(
    name="samples",
    summary="continue the preset's sample prompts with the base model",
    reads=("base",),
    writes=("samples",),
    run=_run,
    report=_report,
    settings=("sample",),
)
