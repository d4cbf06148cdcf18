"""Knowledge distillation as a Task for the one loop: a student learns a teacher's next-token
distributions, not just the one token the data happened to contain.

:class:`DistillTask` wraps the task that supplies the data (pretraining windows, or chat rows with
``-100`` labels outside the assistant's replies) and keeps its batches, its validation and its
hard-label loss; it adds the teacher's soft targets:
``loss = alpha * T^2 * D(teacher_T, student_T) + (1 - alpha) * cross-entropy(labels)``, per target
token, with D the forward KL (Hinton et al. 2015), the reverse KL (MiniLLM) or a mix
(:func:`~llmkit.train.objectives.distill_divergence`). Teacher and student may differ in size but
must share the tokenizer (the vocabularies are compared before training starts).

The data is a run's pretraining shards (:class:`~llmkit.train.pretrain.PretrainTask`) or chat
conversations (:func:`chat_task`: the SFT encoding and packing, the loss on the assistant's tokens
only, a tenth held out), so a chat teacher can be distilled on the conversations it was tuned for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llmkit.checkpoint import check_checkpoint
from llmkit.config import ModelConfig, RunConfig, stage_train_config
from llmkit.console import say
from llmkit.errors import ConfigError
from llmkit.tokenizer import Tokenizer
from llmkit.train import distributed
from llmkit.train.objectives import DIVERGENCES, distill_divergence
from llmkit.train.posttrain import check_choice, fit_stage, load_frozen, load_trainable

IGNORE = -100


class DistillTask:
    def __init__(self, base, teacher, *, temperature: float = 1.0, alpha: float = 0.8, kind: str = "forward", mix=0.5):
        self.base, self.teacher = base, teacher
        self.temperature, self.alpha, self.kind, self.mix = temperature, alpha, kind, mix

    def batch(self, step: int, index: int, total: int) -> dict[str, Any]:
        return self.base.batch(step, index, total)

    def tokens(self, batch) -> int:
        return self.base.tokens(batch)

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        ids, labels = batch["input_ids"], batch["labels"]  # (B, T) each; labels -100 where no loss
        packed = {k: batch[k] for k in ("position_ids", "attn_mask") if k in batch}  # packed chat rows
        logits = model(ids, **packed)  # (B, T, V)
        with torch.no_grad():
            teacher_logits = self.teacher(ids, **packed)  # (B, T, V)
        keep = labels != IGNORE  # (B, T)
        hard = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")
        soft = distill_divergence(logits[keep], teacher_logits[keep], self.temperature, self.kind, self.mix).sum()
        loss = self.alpha * soft + (1 - self.alpha) * hard
        n = keep.sum().clamp(min=1)
        return loss, {"kd": float(soft.detach() / n), "ce": float(hard.detach() / n)}

    def evaluate(self, model, info: distributed.DistInfo) -> dict[str, float]:
        """The data task's own validation (the student's loss on held-out text: the measure that
        says whether the teacher helped)."""
        return self.base.evaluate(model, info)


def chat_task(source: str, tokenizer, seq_len: int, batch_size: int, seed: int, device) -> Any:
    """Conversations of ``source`` (any file ``llmkit sft --data`` reads) as an SFT task whose
    evaluation is the held-out loss per assistant token (``val_loss``) on a tenth of them."""
    from llmkit.data.chat import ChatStats, encode_conversations, fit_length, read_conversations
    from llmkit.train.posttrain import hold_out
    from llmkit.train.sft import SFTTask, collate, sft_loss

    stats = ChatStats()
    encoded = [
        fit_length(e, seq_len, "truncate", stats)
        for e in encode_conversations(tokenizer, read_conversations(source, stats))
    ]
    kept = [e for e in encoded if e is not None]
    train, val = hold_out(kept, 0.1, key=lambda e: " ".join(map(str, e.ids)), seed=seed)
    if not val:
        raise ConfigError(f"{source}: too few conversations to hold out a tenth for validation; give at least 10")

    @torch.no_grad()
    def evaluate(model, info: distributed.DistInfo) -> dict[str, float]:
        total, count = 0.0, 0
        for i in range(0, len(val), batch_size):
            batch = collate([[e] for e in val[i : i + batch_size]], seq_len, tokenizer.pad_id)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            total += float(sft_loss(model, batch))
            count += batch["count"]
        return {"val_loss": total / max(count, 1)}

    say(f"distill: {len(train)} conversations ({len(val)} held out) from {source}; {stats.summary()}")
    return SFTTask(
        [train], [1.0], seq_len, batch_size, tokenizer.pad_id, seed=seed, evaluate_fn=evaluate, device=device
    )


def run_distill(teacher_dir: Path, out_dir: Path, cfg: RunConfig, data, student_dir: Path | None = None) -> dict:
    """Distil the teacher at ``teacher_dir`` into a student (the checkpoint ``student_dir``, or a
    fresh model of shape ``cfg.model``) into ``out_dir`` (resuming), on ``data`` (a run's prepared
    token shards) or, when ``distill.data`` names a file of conversations, on those (``data`` is
    then None). ``distill.alpha=0`` trains the same student on the data alone (the baseline)."""
    from llmkit.model.transformer import Transformer
    from llmkit.train.pretrain import PretrainTask

    d = cfg.distill
    check_choice(d.divergence, DIVERGENCES, "distill.divergence")
    if not 0.0 <= d.alpha <= 1.0:
        raise ConfigError(f"distill.alpha={d.alpha} must be in [0, 1]")
    train_cfg = stage_train_config(cfg.train, d)
    info = distributed.setup(train_cfg.device)
    device = distributed.pick_device(train_cfg.device, info.local_rank)
    teacher_tok = Tokenizer.load(teacher_dir)
    if data is not None and data.tokenizer.fingerprint() != teacher_tok.fingerprint():
        raise ConfigError(
            f"{teacher_dir}: the teacher's tokenizer differs from the one the training data was tokenized with; "
            "distil on data prepared with the teacher's tokenizer"
        )
    if student_dir is not None:
        student, tok = load_trainable(Path(student_dir), device)
    else:
        teacher_cfg = ModelConfig.from_hf_dict(check_checkpoint(teacher_dir), str(Path(teacher_dir) / "config.json"))
        shape = dict(vars(cfg.model))
        shape.update(
            {k: getattr(teacher_cfg, k) for k in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")}
        )
        torch.manual_seed(train_cfg.seed)
        student, tok = Transformer(ModelConfig(**shape)).to(device), teacher_tok
    teacher = load_frozen(Path(teacher_dir), device, tok, student.config, "teacher")
    if data is None:
        seq_len = min(train_cfg.seq_len, student.config.max_position_embeddings)
        base = chat_task(d.data, tok, seq_len, train_cfg.batch_size, train_cfg.seed, device)
    else:
        base = PretrainTask(
            data.train,
            data.val,
            train_cfg.seq_len,
            train_cfg.batch_size,
            data.tokenizer.token_bytes(),
            seed=train_cfg.seed,
            eval_batches=train_cfg.eval_batches,
            device=device,
        )
    task = DistillTask(base, teacher, temperature=d.temperature, alpha=d.alpha, kind=d.divergence, mix=d.mix)
    if info.is_main:
        say(
            f"distill: teacher {teacher.num_params() / 1e6:.2f}M -> student {student.num_params() / 1e6:.2f}M "
            f"parameters, {d.divergence} KL at T={d.temperature}, alpha {d.alpha}, {train_cfg.max_steps} steps"
        )
    return fit_stage(student, task, train_cfg, Path(out_dir), tok, "distill", lora_rank=d.lora_rank)
