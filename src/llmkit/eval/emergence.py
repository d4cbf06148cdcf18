"""Emergence, measured two ways: each sweep point's model on a task, by thresholded exact match and by
the smooth per-token loss of the answer.

Schaeffer et al. (2023) showed that an ability can look as if it appeared suddenly at some scale
only because exact match is all-or-nothing over several tokens: the per-token loss of the same
answers falls smoothly. Plotting both against compute and model size from the same models lets a
reader see which one they are looking at.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmkit.console import say
from llmkit.eval.runner import run_task
from llmkit.eval.taskfile import load_task


def emergence(out_dir: Path, results: list[dict], task_name: str, batch_size: int = 32) -> Path:
    """Score every point's final model on ``task_name`` (cached per point), write ``emergence.json``
    and ``emergence.png``."""
    import llmkit
    from llmkit.eval.plots import plot_emergence
    from llmkit.files import atomic_write_json

    out_dir = Path(out_dir)
    task = load_task(task_name)
    rows = []
    for r in sorted(results, key=lambda r: r["compute"]):
        ckpt = out_dir / "points" / r["name"]
        cache = ckpt / f"task-{task.name}.json"
        if cache.is_file():
            scored = json.loads(cache.read_text(encoding="utf-8"))
        else:
            lm = llmkit.load(ckpt, device="cpu")
            scored = run_task(lm.model, lm.tokenizer, task, batch_size=batch_size).to_dict()
            atomic_write_json(cache, scored)
            say(
                f"emergence: {r['name']}: {task.name} exact match {100 * scored['acc']:.1f}%, "
                f"answer loss {scored['answer_loss']:.3f}"
            )
        rows.append({k: r[k] for k in ("name", "shape", "N", "D", "compute", "budget")} | scored)
    atomic_write_json(out_dir / "emergence.json", rows)
    return plot_emergence(rows, out_dir / "emergence.png")
