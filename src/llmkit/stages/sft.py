"""The ``sft`` stage: the base model fine-tuned on the task suite and the corpus tasks -> ``sft/``.

Writes ``sft/`` (the chat model in HF layout, checkpoints, metrics.jsonl, loss.png),
``sft/eval_base.json`` (the base model's few-shot held-out accuracy, measured once before training)
and ``sft/eval_sft.json`` (the fine-tuned model's held-out accuracy and replies).
"""

from __future__ import annotations

import json

from llmkit.console import say
from llmkit.files import atomic_write_json
from llmkit.stages import ReportSections, Stage, StageContext
from llmkit.train import distributed


def _corpus_tasks(cfg):
    from llmkit.tasks import CorpusSplit, corpus_tasks

    split = CorpusSplit(cfg.data.val_fraction, cfg.train.seed, cfg.data.max_documents)
    return [t for t in corpus_tasks(split, sources=list(cfg.data.sources)) if t.name in cfg.sft.corpus_tasks]


def run_sft(ctx: StageContext):
    from llmkit.checkpoint import load_model
    from llmkit.tokenizer import Tokenizer
    from llmkit.train.finetune import base_accuracy, build_mix, finetune

    cfg, info = ctx.cfg, ctx.info
    base, out = ctx.path("base"), ctx.path("sft")
    tok = Tokenizer.load(base)
    model = load_model(base, device="cpu")
    seq_len = cfg.sft.seq_len or model.config.max_position_embeddings
    data = build_mix(tok, cfg.sft, seq_len, cfg.train.seed, corpus=_corpus_tasks(cfg))
    if info.is_main:
        for name, st in data.stats.items():
            say(f"sft data: {name}: {st.summary()}")
    base_file = out / "eval_base.json"
    if info.is_main and not base_file.is_file():
        say(f"sft: base model, {cfg.sft.few_shot}-shot, on {len(data.eval_examples)} held-out examples")
        r = base_accuracy(model, tok, data.eval_examples, data.train_examples, cfg.sft.few_shot, cfg.train.seed)
        atomic_write_json(base_file, {"few_shot": cfg.sft.few_shot, "scores": r.table(), "responses": r.responses})
    distributed.barrier(info)
    sink: dict = {}
    train_cfg = cfg.sft.train_config(cfg.train, seq_len)
    result = finetune(base, out, cfg.sft, train_cfg, data, tok, model=model, info=info, sink=sink)
    if info.is_main:
        evaluation = sink.get("eval", {"scores": {}, "responses": []})
        atomic_write_json(
            out / "eval_sft.json",
            {
                **evaluation,
                "examples": [e.to_dict() for e in data.eval_examples],
                "train": {
                    "step": result.step,
                    "tokens_per_s": result.tokens_per_s,
                    "train_seconds": result.elapsed_s,
                    "conversations": sum(len(d) for d in data.datasets),
                },
            },
        )
        acc = result.final_eval.get("val_acc")
        if acc is not None:
            say(f"sft: mean held-out accuracy {100 * acc:.1f}% -> {out}")
    return result


ACCURACY_HEADING = "Held-out task accuracy (base few-shot vs SFT)"
"""The report section later stages (``rl``) extend with a column of their own."""


def accuracy_table(base: dict, sft: dict, few_shot: int, later: dict[str, dict] | None = None) -> str:
    """Markdown: per task, n, the base model's k-shot accuracy and the SFT model's, each ± its
    standard error; ``later`` adds a column per later stage (name -> its scores) on the same examples."""
    later = later or {}

    def cell(s):
        return f"{100 * s['accuracy']:.1f}% ± {100 * s['stderr']:.1f}" if s else "-"

    lines = [
        f"| task | n | base ({few_shot}-shot) | SFT |" + "".join(f" {name} |" for name in later),
        "| --- | ---: | ---: | ---: |" + " ---: |" * len(later),
    ]
    for name, s in sft.items():
        extra = "".join(f" {cell(scores.get(name))} |" for scores in later.values())
        lines.append(f"| {name} | {s['n']} | {cell(base.get(name))} | {cell(s)} |{extra}")
    return "\n".join(lines)


def _report(ctx: StageContext) -> ReportSections:
    base = json.loads(ctx.path("sft/eval_base.json").read_text(encoding="utf-8"))
    sft = json.loads(ctx.path("sft/eval_sft.json").read_text(encoding="utf-8"))
    sections: ReportSections = {
        ACCURACY_HEADING: accuracy_table(base["scores"], sft["scores"], base["few_shot"]),
        "SFT training": {
            "steps": sft["train"]["step"],
            "conversations": sft["train"]["conversations"],
            "tokens/s": sft["train"]["tokens_per_s"],
            "training time (s)": sft["train"]["train_seconds"],
        },
    }
    if ctx.path("sft/loss.png").is_file():
        sections["SFT loss curve"] = "![sft loss](sft/loss.png)"
    return sections


STAGE = Stage(
    name="sft",
    summary="fine-tune the base model on the task suite and corpus tasks; held-out accuracy before and after",
    reads=("base",),
    writes=("sft",),
    run=run_sft,
    report=_report,
    all_ranks=True,
    settings=("sft",),
)
