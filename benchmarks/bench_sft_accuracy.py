"""Held-out accuracy of a speedrun's base model (few-shot) and its SFT model, per task, with
standard errors, on many more held-out items than the stage itself evaluates.

Reads the run's resolved config (its tasks, corpus split, few-shot count and seed), makes ``--n``
test items per task (corpus tasks can hold fewer: their items come only from held-out documents),
and scores both models with the one runner (``llmkit.tasks.runner.evaluate_tasks``): the base model
with k training items as shots, the SFT model through its chat template. Greedy, exact answers.

    python benchmarks/bench_sft_accuracy.py runs/cpu-tiny --n 500
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--n", type=int, default=500, help="held-out items per task")
    ap.add_argument(
        "--tasks",
        default=None,
        help="comma-separated tasks to score (default: the SFT stage's tasks and corpus tasks); tasks the "
        "stage did not train on show what SFT on other tasks does to them",
    )
    ap.add_argument("--sft", type=Path, default=None, help="the fine-tuned model to score (default: RUN/sft)")
    ap.add_argument("--out", type=Path, default=None, help="also write the scores and replies here (JSON)")
    args = ap.parse_args()

    from llmkit.checkpoint import load_model
    from llmkit.config import resolve
    from llmkit.stages.sft import _corpus_tasks, accuracy_table
    from llmkit.tasks.corpus import TASKS
    from llmkit.tasks.runner import evaluate_tasks
    from llmkit.tokenizer import Tokenizer
    from llmkit.train.finetune import task_examples

    saved = yaml.safe_load((args.run_dir / "config.yaml").read_text(encoding="utf-8"))
    cfg = resolve(saved.get("preset", "cpu-tiny"), base=saved)
    corpus_names = {t.name for t in TASKS}
    seed, k = cfg.train.seed, cfg.sft.few_shot
    if args.tasks:
        names = args.tasks.split(",")
        cfg.sft.corpus_tasks = [t for t in names if t in corpus_names]
        names = [t for t in names if t not in corpus_names]
    else:
        names = list(cfg.sft.tasks)
    corpus = _corpus_tasks(cfg)
    test = task_examples(names, "test", args.n, seed, corpus)
    shots = task_examples(names, "train", 50, seed, corpus)
    sft_dir = args.sft or args.run_dir / "sft"
    tok = Tokenizer.load(sft_dir)
    t = time.perf_counter()
    base = evaluate_tasks(
        load_model(args.run_dir / "base").eval(), tok, test, mode="few_shot", shot_pool=shots, k=k, seed=seed
    )
    t_base = time.perf_counter() - t
    t = time.perf_counter()
    sft = evaluate_tasks(load_model(sft_dir).eval(), tok, test, mode="chat")
    t_sft = time.perf_counter() - t
    print(f"{len(test)} held-out items; base {k}-shot in {t_base:.0f} s, SFT in {t_sft:.0f} s\n")
    print(accuracy_table(base.table(), sft.table(), k))
    stages = json.loads((args.run_dir / "stages.json").read_text(encoding="utf-8"))
    print("\n| stage | seconds |\n| --- | ---: |")
    for name, row in stages.items():
        print(f"| {name} | {row['seconds']:.0f} |")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "base": base.table(),
                    "sft": sft.table(),
                    "examples": [e.to_dict() for e in test],
                    "base_responses": base.responses,
                    "sft_responses": sft.responses,
                },
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
