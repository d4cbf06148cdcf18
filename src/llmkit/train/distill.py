"""Knowledge distillation as a Task for the one loop: a student learns a teacher's next-token
distributions, not just the one token the data happened to contain.

:class:`DistillTask` wraps the task that supplies the data (pretraining windows, or chat rows with
``-100`` labels outside the assistant's replies) and keeps its batches, its validation and its
hard-label loss; it adds the teacher's soft targets:
``loss = alpha * T^2 * D(teacher_T, student_T) + (1 - alpha) * cross-entropy(labels)``, per target
token, with D the forward KL (Hinton et al. 2015), the reverse KL (MiniLLM) or a mix
(:func:`~llmkit.train.objectives.distill_divergence`). Teacher and student may differ in size but
must share the tokenizer (the vocabularies are compared before training starts).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from llmkit.train import distributed
from llmkit.train.objectives import distill_divergence

IGNORE = -100


class DistillTask:
    def __init__(self, base, teacher, *, temperature: float = 2.0, alpha: float = 0.5, kind: str = "forward", mix=0.5):
        self.base, self.teacher = base, teacher
        self.temperature, self.alpha, self.kind, self.mix = temperature, alpha, kind, mix

    def batch(self, step: int, index: int, total: int) -> dict[str, Any]:
        return self.base.batch(step, index, total)

    def tokens(self, batch) -> int:
        return self.base.tokens(batch)

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        ids, labels = batch["input_ids"], batch["labels"]  # (B, T) each; labels -100 where no loss
        logits = model(ids)  # (B, T, V)
        with torch.no_grad():
            teacher_logits = self.teacher(ids)  # (B, T, V)
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
