"""What every preference and RL stage does around its Task: load the starting checkpoint and its
tokenizer, load frozen companions (a reference, a teacher, a reward model) after checking they
speak the same vocabulary, hold out part of the data, and write ``train_summary.json``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from llmkit.checkpoint import check_checkpoint, load_model
from llmkit.errors import ConfigError
from llmkit.files import atomic_write_json
from llmkit.tokenizer import Tokenizer

T = TypeVar("T")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linear layers that get LoRA adapters with ``--lora`` (all of them, as QLoRA recommends)."""


def load_trainable(path: Path, device) -> tuple[torch.nn.Module, Tokenizer]:
    """The checkpoint at ``path`` in fp32 (the loop's master weights) and its tokenizer."""
    model = load_model(path, device=device)
    model.train()
    return model, Tokenizer.load(path)


def check_same_vocabulary(tokenizer: Tokenizer, model_config, other: Path, role: str) -> None:
    """``other`` (a reference, teacher or reward model) must use the same tokenizer: its scores of
    our token ids would be meaningless otherwise. One-line error naming the checkpoint."""
    hf = check_checkpoint(other)
    if hf.get("vocab_size") != model_config.vocab_size:
        raise ConfigError(
            f"{other}: the {role}'s vocabulary has {hf.get('vocab_size')} entries but the model's has "
            f"{model_config.vocab_size}; use a {role} trained with the same tokenizer"
        )
    theirs = Tokenizer.load(other)
    if theirs.fingerprint() != tokenizer.fingerprint():
        raise ConfigError(
            f"{other}: the {role}'s tokenizer differs from the model's (tokenizer.json is not the same); "
            f"use a {role} trained with the same tokenizer"
        )


def load_frozen(path: Path, device, tokenizer: Tokenizer, model_config, role: str) -> torch.nn.Module:
    """A companion checkpoint for scoring only (eval mode, no gradients), after the vocabulary check."""
    check_same_vocabulary(tokenizer, model_config, Path(path), role)
    model = load_model(path, device=device)
    model.requires_grad_(False)
    return model.eval()


def hold_out(items: Sequence[T], fraction: float, key: Callable[[T], str], seed: int = 0) -> tuple[list[T], list[T]]:
    """Split by a stable hash of each item's ``key`` (the same item always lands on the same side;
    duplicates never straddle): ``fraction`` held out, at least one item each side when possible."""
    from llmkit.data.sources import split_documents

    keys = [key(x) for x in items]
    _, val_keys = split_documents(keys, fraction, seed)
    val_set = set(val_keys)
    train = [x for x, k in zip(items, keys, strict=True) if k not in val_set]
    val = [x for x, k in zip(items, keys, strict=True) if k in val_set]
    return train, val


def write_summary(out_dir: Path, result, **extra) -> dict:
    """``train_summary.json``: steps, device, throughput, time and the final evaluation."""
    summary = {
        "step": result.step,
        "device": result.device,
        "dtype": result.dtype,
        "tokens_per_s": result.tokens_per_s,
        "train_seconds": result.elapsed_s,
        **extra,
        **result.final_eval,
    }
    atomic_write_json(Path(out_dir) / "train_summary.json", summary)
    return summary


def check_choice(value: str, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: use one of {', '.join(choices)}")


def fit_stage(
    model,
    task,
    train_cfg,
    out_dir: Path,
    tokenizer,
    stage: str,
    extra_config: dict | None = None,
    lora_rank: int = 0,
    heads: Sequence[torch.nn.Module] = (),
    base_path: Path | None = None,
) -> dict:
    """Run the one loop on ``task`` (resuming from ``out_dir/checkpoints``) and write the summary;
    returns it (on the main process; ``{}`` elsewhere).

    ``lora_rank`` > 0 trains LoRA adapters (and the ``heads``, e.g. a value or score head) instead of
    every weight; ``out_dir`` then holds the merged model, and ``out_dir/adapter`` the adapter in
    PEFT format for causal LMs."""
    from llmkit.console import say
    from llmkit.train.trainer import Trainer

    lora_cfg = None
    if lora_rank:
        from llmkit.model.lora import LoraConfig, add_lora

        lora_cfg = LoraConfig(lora_rank, 16.0, 0.0, list(LORA_TARGETS))
        add_lora(model, lora_cfg)
        for head in heads:
            head.requires_grad_(True)
    extra = {"llmkit_stage": stage, **(extra_config or {})}
    trainer = Trainer(model, task, train_cfg, out_dir, tokenizer=tokenizer, extra_config=extra)
    result = trainer.fit()
    if not trainer.info.is_main:
        return {}
    if lora_cfg is not None:
        from llmkit.checkpoint import publish_model
        from llmkit.model.lora import merge_lora, save_adapter

        export = getattr(task, "export", None)
        if hasattr(model, "lm_head"):
            save_adapter(export(model) if export else model, lora_cfg, Path(out_dir) / "adapter", base_path=base_path)
        merged = merge_lora(model)
        publish_model(out_dir, export(merged) if export else merged, tokenizer, extra_config=extra)
    summary = write_summary(out_dir, result)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.final_eval.items())
    say(f"{stage}: {result.step} steps in {result.elapsed_s:.0f}s{', ' + shown if shown else ''} -> {out_dir}")
    return summary
