"""Generation tasks of the task suite (:mod:`llmkit.tasks`), scored through its one runner and its
verifiers, with chain-of-thought on or off.

``few_shot`` mode (base models): each prompt holds ``shots`` solved training examples, then the test
question. With chain-of-thought the shots show the full reference solution (worked steps where the
task's family has them, ending in the final-answer line); without it they show only the final-answer
line, so the model is shown how to answer at once. ``chat`` mode (instruction-tuned models): the
question in the chat template, the model's own reply verified (chain-of-thought is whatever the
model was tuned to write).
"""

from __future__ import annotations

from dataclasses import replace

from llmkit.eval.perplexity import EvalError


def run_suite_task(
    model,
    tokenizer,
    name: str,
    *,
    mode: str = "few_shot",
    shots: int = 3,
    cot: bool = True,
    n: int = 50,
    seed: int = 1234,
) -> dict:
    """Accuracy (± binomial standard error) of ``n`` test examples of suite task ``name``."""
    from llmkit.errors import ConfigError
    from llmkit.tasks import get_task
    from llmkit.tasks.base import final_line
    from llmkit.tasks.runner import evaluate_tasks

    try:
        task = get_task(name)
    except ConfigError as e:
        raise EvalError(f"--suite: {e}") from None
    examples = task.make("test", n, seed=seed)
    if not examples:
        raise EvalError(f"--suite {name}: the task has no test examples")
    pool = []
    if mode == "few_shot" and shots:
        pool = task.make("train", max(4 * shots, 20), seed=seed)
        if len(pool) < shots:
            raise EvalError(f"--suite {name}: {shots} shots asked but the task has only {len(pool)} training examples")
        if not cot:
            pool = [replace(ex, solution=final_line(ex.answer, ex.lang)) for ex in pool]
    result = evaluate_tasks(model, tokenizer, examples, mode=mode, shot_pool=pool, k=shots, seed=seed)
    s = result.scores[task.name]
    return {
        "task": task.name,
        "kind": "generate",
        "mode": mode,
        "cot": cot,
        "shots": shots if mode == "few_shot" else 0,
        "n": s.n,
        "acc": s.accuracy,
        "acc_stderr": s.stderr,
    }
