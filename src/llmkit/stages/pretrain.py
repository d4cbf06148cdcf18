"""The ``pretrain`` stage: the data stage's shards -> a pretrained base model in ``base/``.

Runs on every ``torchrun`` process (DDP or FSDP2, ``train.parallel``). A killed run resumes from
``base/checkpoints/`` when the stage runs again.
"""

from __future__ import annotations

import json

import torch

from llmkit.console import say
from llmkit.files import atomic_write_json
from llmkit.stages import ReportSections, Stage, StageContext
from llmkit.stages.data import load_prepared
from llmkit.train import distributed


def run_pretrain(ctx: StageContext):
    """Pretrain (resuming) into ``run_dir/base``; returns the TrainResult."""
    from llmkit.model.transformer import Transformer
    from llmkit.train.memory import estimate
    from llmkit.train.pretrain import PretrainTask
    from llmkit.train.trainer import Trainer

    cfg, info = ctx.cfg, ctx.info
    data = load_prepared(ctx.run_dir)
    base = ctx.path("base")
    cfg.model.vocab_size = 64 * -(-data.tokenizer.vocab_size // 64)  # round up for matmul efficiency
    cfg.model.bos_token_id, cfg.model.eos_token_id, cfg.model.pad_token_id = (
        data.tokenizer.bos_id,
        data.tokenizer.eos_id,
        data.tokenizer.pad_id,
    )
    cfg.validate()
    data.tokenizer.model_max_length = cfg.model.max_position_embeddings  # saved beside the model
    torch.manual_seed(cfg.train.seed)
    model = Transformer(cfg.model)
    device = distributed.pick_device(cfg.train.device, info.local_rank)
    task = PretrainTask(
        data.train,
        data.val,
        cfg.train.seq_len,
        cfg.train.batch_size,
        data.tokenizer.token_bytes(),
        seed=cfg.train.seed,
        eval_batches=cfg.train.eval_batches,
        device=device,
    )
    if info.is_main:
        say(
            f"pretrain: {model.num_params() / 1e6:.2f}M parameters, {cfg.train.max_steps} steps of "
            f"{cfg.train.batch_size * cfg.train.grad_accum * info.world_size} x {cfg.train.seq_len} tokens "
            f"on {device} ({info.world_size} process{'es' if info.world_size > 1 else ''})"
        )
        memory = estimate(cfg.model, cfg.train, info.world_size)
        say(
            f"pretrain: estimated memory per process {memory.describe()} with train.parallel={cfg.train.parallel}, "
            f"activation_checkpointing={cfg.train.activation_checkpointing}"
        )
    trainer = Trainer(model, task, cfg.train, base, tokenizer=data.tokenizer, extra_config={"llmkit_stage": "base"})
    result = trainer.fit()
    if info.is_main:
        summary = {
            "step": result.step,
            "device": result.device,
            "dtype": result.dtype,
            "processes": info.world_size,
            "tokens_per_s": result.tokens_per_s,
            "mfu": result.mfu,
            "train_seconds": result.elapsed_s,
            **result.final_eval,
        }
        atomic_write_json(base / "train_summary.json", summary)
        if result.final_eval:
            say(
                "pretrain: "
                + ", ".join(f"{k} {v:.4f}" for k, v in result.final_eval.items())
                + f", {result.tokens_per_s:,.0f} tok/s -> {base}"
            )
    return result


def _report(ctx: StageContext) -> ReportSections:
    summary = json.loads(ctx.path("base/train_summary.json").read_text(encoding="utf-8"))
    rows = {
        "steps": summary["step"],
        "device / autocast dtype / processes": f"{summary.get('device')} / {summary.get('dtype')} / "
        f"{summary.get('processes', 1)}",
        "tokens/s": summary["tokens_per_s"],
        "MFU (vs measured matmul peak)": f"{100 * summary['mfu']:.1f}%",
        "training time (s)": summary["train_seconds"],
    }
    rows.update({k: v for k, v in summary.items() if k.startswith("val_")})
    sections: ReportSections = {"Pretraining": rows}
    if ctx.path("base/loss.png").is_file():
        sections["Loss curve"] = "![loss](base/loss.png)"
    return sections


STAGE = Stage(
    name="pretrain",
    summary="pretrain the base model on the token shards (resumes from its latest checkpoint)",
    reads=("tokenizer", "data"),
    writes=("base",),
    run=run_pretrain,
    report=_report,
    all_ranks=True,
    settings=("model", "train"),
)
