"""The ``eval`` stage: the run's checkpoints side by side on held-out text and tasks; the speedrun's
last section. Bits per byte on each validation source (the documents the data stage held out),
the preset's tasks, and the in-context curve (accuracy against 0, 1, 2, 4, 8 shots)."""

from __future__ import annotations

import json

from llmkit.console import say
from llmkit.stages import ReportSections, Stage, StageContext


def validation_texts(ctx: StageContext) -> dict[str, list[str]]:
    """The held-out documents of each source, decoded from the data stage's validation shards
    (each document is written as BOS + ids, so BOS splits them back)."""
    from llmkit.data.shards import TokenShards
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.load(ctx.path("tokenizer"))
    stats = json.loads(ctx.path("data/stats.json").read_text(encoding="utf-8"))
    out = {}
    for name in stats["val_sets"]:
        shards = TokenShards(ctx.path(f"data/val/{name}"))
        ids = shards.window(0, len(shards)).tolist()
        docs, cur = [], []
        for t in [*ids, tok.bos_id]:
            if t == tok.bos_id:
                if cur:
                    docs.append(tok.decode(cur))
                cur = []
            else:
                cur.append(t)
        out[name] = docs
    return out


def _run(ctx: StageContext) -> None:
    import llmkit
    from llmkit.eval.evaluate import EvalOptions, clip_documents, evaluate_model, write_results
    from llmkit.eval.taskfile import load_task

    cfg = ctx.cfg.eval
    held_out = validation_texts(ctx)
    texts = {name: clip_documents(docs, cfg.max_bytes) for name, docs in held_out.items()}
    plain = EvalOptions(tasks=cfg.tasks, shots=cfg.shots, seed=cfg.seed, batch_size=cfg.batch_size, limit=cfg.limit)
    icl = EvalOptions(
        tasks=cfg.icl_tasks, shots=cfg.icl_shots, seed=cfg.seed, batch_size=cfg.batch_size, limit=cfg.limit
    )
    tasks = [load_task(t, documents=held_out) for t in plain.tasks]
    icl_tasks = [load_task(t, documents=held_out) for t in icl.tasks]
    results = []
    for name in cfg.checkpoints:
        if not ctx.path(f"{name}/config.json").is_file():
            continue
        lm = llmkit.load(ctx.path(name), device="cpu", inference_only=True)
        row = evaluate_model(lm, plain, tasks, texts, label=name)
        row["tasks"] += evaluate_model(lm, icl, icl_tasks, {}, label=name)["tasks"]
        results.append(row)
    if not results:
        say(f"eval: none of {', '.join(cfg.checkpoints)} is in {ctx.run_dir}; nothing to evaluate")
    write_results(results, ctx.path("eval"), EvalOptions(shots=sorted({*cfg.shots, *cfg.icl_shots})))


def _report(ctx: StageContext) -> ReportSections:
    text = ctx.path("eval/results.md").read_text(encoding="utf-8")
    body = text.split("\n", 2)[2] if text.startswith("# ") else text  # drop the file's own heading
    body = body.replace("](icl.png)", "](eval/icl.png)")
    note = (
        "Bits per byte on each held-out source; task accuracy ± standard error (acc_norm divides each choice's "
        "log-likelihood by its length). The in-context tasks can only be solved from the shots; chance is dashed.\n\n"
    )
    return {"Evaluation": note + body}


STAGE = Stage(
    name="eval",
    summary="score the run's checkpoints on held-out text (bits per byte) and tasks (few-shot accuracy)",
    reads=("tokenizer", "data", "base"),
    writes=("eval",),
    run=_run,
    report=_report,
    settings=("eval",),
)
