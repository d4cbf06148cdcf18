"""``llmkit sft`` and the speedrun's ``sft`` stage: a base checkpoint + conversations -> a chat model.

:func:`build_mix` turns the task suite's training splits and the user's chat datasets into encoded
conversations; :func:`finetune` runs :class:`~llmkit.train.sft.SFTTask` in the one loop (full
weights or LoRA adapters), measuring held-out task accuracy through the inference engine as it
goes, and writes a Hugging Face checkpoint (``llmkit_stage: sft``) that ``llmkit chat`` talks to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from llmkit.config import SFTConfig, TrainConfig
from llmkit.console import say
from llmkit.data.chat import ChatStats, Encoded, encode_conversation, fit_length, parse_source, read_conversations
from llmkit.errors import ConfigError
from llmkit.tasks import Example, get_task, to_messages
from llmkit.train import distributed


@dataclass
class SFTData:
    """Encoded training conversations per dataset (the task mix first), their weights, what
    reading them counted, and the held-out examples to evaluate."""

    datasets: list[list[Encoded]]
    weights: list[float]
    names: list[str]
    stats: dict[str, ChatStats]
    eval_examples: list[Example] = field(default_factory=list)
    train_examples: list[Example] = field(default_factory=list)


def task_examples(names: list[str], split: str, n: int, seed: int, extra_tasks=()) -> list[Example]:
    """``n`` examples of ``split`` for every named task (plus already-built task objects)."""
    tasks = [get_task(name) for name in names] + list(extra_tasks)
    out = []
    for t in tasks:
        out += t.make(split, n, seed)
    return out


def build_mix(
    tokenizer,
    cfg: SFTConfig,
    seq_len: int,
    seed: int,
    corpus=(),
    strict: bool = False,
) -> SFTData:
    """The training mix: the suite tasks named in ``cfg.tasks`` plus ``corpus`` (corpus tasks
    already split like pretraining), weighted ``cfg.task_weight``, and every ``cfg.data`` source."""
    datasets, weights, names, stats = [], [], [], {}
    train_ex = task_examples(cfg.tasks, "train", cfg.task_examples, seed, corpus)
    eval_ex = task_examples(cfg.tasks, "test", cfg.eval_examples, seed, corpus)
    if train_ex:
        st = ChatStats(read=len(train_ex))
        encoded = [
            fit_length(encode_conversation(tokenizer, to_messages(e)), seq_len, cfg.overlong, st) for e in train_ex
        ]
        datasets.append([e for e in encoded if e is not None])
        weights.append(cfg.task_weight)
        names.append("tasks")
        stats["tasks"] = st
    for spec in cfg.data:
        path, weight = parse_source(spec)
        st = ChatStats()
        convs = read_conversations(path, st, strict=strict)
        encoded = [fit_length(encode_conversation(tokenizer, c), seq_len, cfg.overlong, st) for c in convs]
        datasets.append([e for e in encoded if e is not None])
        weights.append(weight)
        names.append(path)
        stats[path] = st
    if not datasets:
        raise ConfigError("no SFT data: give --data files or task names (sft.tasks / --tasks)")
    return SFTData(datasets, weights, names, stats, eval_ex, train_ex)


def accuracy_metrics(scores) -> dict[str, float]:
    """Runner scores -> flat metrics (``val_acc/<task>`` and their mean ``val_acc``)."""
    out = {f"val_acc/{k}": s.accuracy for k, s in scores.items()}
    if scores:
        out["val_acc"] = sum(s.accuracy for s in scores.values()) / len(scores)
    return out


def make_evaluator(tokenizer, examples: list[Example], sink: dict | None = None):
    """``evaluate(model, info)`` for the loop: held-out accuracy by generation (each rank takes
    every world_size-th example; counts are summed over ranks). The last result is kept in
    ``sink["eval"]``."""
    from llmkit.tasks.runner import evaluate_tasks
    from llmkit.tasks.scoring import TaskScore

    def evaluate(model, info: distributed.DistInfo) -> dict[str, float]:
        if not examples:
            return {}
        mine = examples[info.rank :: info.world_size]
        result = evaluate_tasks(model, tokenizer, mine, mode="chat")
        names = list(dict.fromkeys(e.task for e in examples))
        counts = torch.tensor(
            [[result.scores[n].correct, result.scores[n].n] if n in result.scores else [0, 0] for n in names],
            dtype=torch.float64,
        )
        counts = distributed.all_reduce_sum(counts, info)
        scores = {n: TaskScore(n, int(c), int(k)) for n, (c, k) in zip(names, counts.tolist(), strict=True)}
        if sink is not None:
            sink["eval"] = {"scores": {k: v.to_dict() for k, v in scores.items()}, "responses": result.responses}
        return accuracy_metrics(scores)

    return evaluate


def base_accuracy(model, tokenizer, examples: list[Example], shot_pool: list[Example], k: int, seed: int):
    """The base model's held-out accuracy with ``k`` few-shot examples (what SFT is compared to)."""
    from llmkit.tasks.runner import evaluate_tasks

    was_training = model.training
    with torch.no_grad():
        result = evaluate_tasks(model, tokenizer, examples, mode="few_shot", shot_pool=shot_pool, k=k, seed=seed)
    model.train(was_training)
    return result


def finetune(
    base: Path,
    out: Path,
    cfg: SFTConfig,
    train_cfg: TrainConfig,
    data: SFTData,
    tokenizer,
    model=None,
    info: distributed.DistInfo | None = None,
    sink: dict | None = None,
):
    """Fine-tune ``base`` on ``data`` into ``out`` (resuming from ``out/checkpoints``); returns the
    loop's TrainResult. With ``cfg.lora_rank`` only LoRA adapters train, and ``out`` holds the
    adapter (PEFT format) next to the merged model."""
    from llmkit.checkpoint import load_model
    from llmkit.train.sft import SFTTask
    from llmkit.train.trainer import Trainer

    info = info or distributed.DistInfo()
    device = distributed.pick_device(train_cfg.device, info.local_rank)
    if model is None:
        model = load_model(base, device="cpu")
    model.train()
    lora_cfg = None
    if cfg.lora_rank:
        from llmkit.model.lora import LoraConfig, add_lora

        lora_cfg = LoraConfig(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, list(cfg.lora_targets))
        add_lora(model, lora_cfg)
    task = SFTTask(
        data.datasets,
        data.weights,
        train_cfg.seq_len,
        train_cfg.batch_size,
        tokenizer.pad_id if tokenizer.pad_id is not None else 0,
        seed=train_cfg.seed,
        packing=cfg.packing,
        evaluate_fn=make_evaluator(tokenizer, data.eval_examples, sink),
        device=device,
    )
    if cfg.epochs > 0:
        train_cfg.max_steps = task.steps_for(cfg.epochs, train_cfg.batch_size * info.world_size)
    extra = {"llmkit_stage": "sft", "llmkit_base": str(base)}
    trainer = Trainer(model, task, train_cfg, out, tokenizer=tokenizer, extra_config=extra)
    if info.is_main:
        rows = task.rows_per_epoch
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        say(
            f"sft: {sum(len(d) for d in data.datasets)} conversations in {rows} rows of {train_cfg.seq_len} tokens, "
            f"{train_cfg.max_steps} steps ({train_cfg.max_steps * train_cfg.batch_size / max(rows, 1):.2f} epochs), "
            f"training {trained / 1e6:.2f}M parameters{f' (LoRA rank {cfg.lora_rank})' if cfg.lora_rank else ''}"
        )
    result = trainer.fit()
    if lora_cfg is not None and info.is_main:
        from llmkit.checkpoint import publish_model
        from llmkit.model.lora import merge_lora, save_adapter

        save_adapter(model, lora_cfg, out / "adapter", base_path=base)
        publish_model(out, merge_lora(model), tokenizer, extra_config=extra)  # the loop published it unmerged
    return result
