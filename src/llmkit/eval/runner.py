"""The one runner of evaluation tasks scored by log-likelihood (multiple choice and single targets).

Prompts are built like lm-eval's: ``description``, then the shots (each its text, the target
delimiter and its answer) joined by the few-shot delimiter, then the item's text; each answer is
scored as a continuation of that prompt by :func:`llmkit.infer.scoring.score`. A trailing space of
the prompt moves into the continuation and the continuation's ids are what encoding the whole text
adds to encoding the prompt, exactly as lm-eval does, so the numbers agree with the harness.

Metrics (lm-eval's definitions, standard errors as sample std / sqrt(n)):
``acc`` the right choice has the highest log-likelihood (``chance`` is its expected value for a
model that guesses); ``acc_norm`` the same after dividing each
choice's log-likelihood by its length in characters. For ``loglikelihood`` tasks ``acc`` is whether
greedy decoding would write the target (all-or-nothing exact match) and ``answer_loss`` the target's
loss in nats per token (the smooth view of the same ability).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmkit.eval.perplexity import EvalError
from llmkit.eval.taskfile import Task
from llmkit.infer.scoring import score


@dataclass
class TaskResult:
    task: str
    kind: str
    shots: int
    n: int
    metrics: dict[str, float]
    details: list[dict] = field(default_factory=list)
    """Per item: the prompt, the log-likelihoods and whether it was right (``--log-samples``)."""

    def to_dict(self, with_details: bool = False) -> dict:
        out = {"task": self.task, "kind": self.kind, "shots": self.shots, "n": self.n, **self.metrics}
        if with_details:
            out["details"] = self.details
        return out


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation over sqrt(n), as lm-eval reports)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def shot_indices(pool_size: int, k: int, seed: int, item: int, exclude: int | None) -> list[int]:
    """The ``k`` shots of item ``item``: a sample of the pool fixed by (seed, item), never the item
    itself (``exclude``). The same seed always gives the same prompts."""
    candidates = [i for i in range(pool_size) if i != exclude]
    return random.Random(f"{seed}\0{item}").sample(candidates, k)


def build_context(task: Task, index: int, shots: int, seed: int) -> str:
    """The prompt of item ``index`` with ``shots`` examples before it."""
    pool = task.fewshot if task.fewshot is not None else task.items
    exclude = None if task.fewshot is not None else index
    available = len(pool) - (exclude is not None)
    if shots > available:
        raise EvalError(
            f"{task.source}: {shots} shots asked but only {available} other items to draw them from; "
            "lower --shots or add items"
        )
    parts = [
        task.text(pool[j]) + task.target_delimiter + task.target(pool[j])
        for j in shot_indices(len(pool), shots, seed, index, exclude)
    ]
    prefix = task.fewshot_delimiter.join(parts) + task.fewshot_delimiter if parts else ""
    return task.description + prefix + task.text(task.items[index])


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids after BOS, continuation ids) the way lm-eval splits a pair (see module doc)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    prefix = [tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id]
    return prefix + ctx, whole[len(ctx) :]


def run_task(
    model,
    tokenizer,
    task: Task,
    *,
    shots: int = 0,
    seed: int = 1234,
    batch_size: int = 16,
    limit: int = 0,
    details: bool = False,
) -> TaskResult:
    """Score ``task`` (its first ``limit`` items when > 0) with ``shots`` examples in each prompt."""
    if shots < 0:
        raise EvalError(f"shots must be >= 0, got {shots}")
    indices = range(min(limit, len(task.items)) if limit > 0 else len(task.items))
    contexts = [build_context(task, i, shots, seed) for i in indices]
    answers = [
        task.items[i]["choices"] if task.kind == "multiple_choice" else [task.items[i]["target"]] for i in indices
    ]
    requests, owner = [], []
    for r, (ctx, options) in enumerate(zip(contexts, answers, strict=True)):
        for option in options:
            requests.append(encode_pair(tokenizer, ctx, task.target_delimiter + option))
            owner.append(r)
    scored = score(model, requests, batch_size=batch_size)
    per_item: list[list] = [[] for _ in contexts]
    for r, s in zip(owner, scored, strict=True):
        per_item[r].append(s)
    rows = []
    if task.kind == "multiple_choice":
        for i, options, ss in zip(indices, answers, per_item, strict=True):
            lls = [s.logprob for s in ss]
            norm = [ll / len(o) for ll, o in zip(lls, options, strict=True)]
            gold = task.items[i]["answer"]
            rows.append(
                {
                    "acc": float(max(range(len(lls)), key=lls.__getitem__) == gold),
                    "acc_norm": float(max(range(len(norm)), key=norm.__getitem__) == gold),
                    "loglikelihoods": lls,
                    "answer": gold,
                }
            )
        names = ("acc", "acc_norm")
        chance = sum(1 / len(options) for options in answers) / len(answers)
    else:
        for ss in per_item:
            (s,) = ss
            rows.append({"acc": float(s.is_greedy), "answer_loss": -s.logprob / len(s.token_logprobs)})
        names = ("acc", "answer_loss")
        chance = 0.0
    metrics: dict[str, float] = {"chance": chance}
    for name in names:
        metrics[name], metrics[f"{name}_stderr"] = mean_stderr([row[name] for row in rows])
    info = []
    if details:
        info = [{"context": c, **row} for c, row in zip(contexts, rows, strict=True)]
    return TaskResult(task.name, task.kind, shots, len(rows), metrics, info)
