"""Arithmetic with and without the calculator: what the tool adds to a small chat model.

The default speedrun's SFT mix has no tool tasks, so its chat model never calls a tool. This
script fine-tunes the run's base model with ``llmkit sft`` on the tool tasks (``calc_add4``,
``calc_sub4``, ``calc_mul3``: reference replies call the calculator and answer from its result;
``tool_compare2``: the tool is offered but not needed), the cpu-tiny SFT settings with
``--steps`` steps, then answers ``--n`` held-out items of each task twice with the one runner
(``llmkit.tasks.runner.evaluate_tasks``): through the tool loop, where the calculator runs the
calls the model writes, and plainly (``tools=False``), the same model answering alone. Greedy,
exact answers, standard errors.

    python benchmarks/bench_tools.py runs/cpu-tiny --n 500

A tool conversation (the calculator's JSON schema in the system turn, the call, its result and the
answer) is about 285 tokens, longer than the default model's 256-token context, so the base model
is first copied with its context raised to ``--context`` (RoPE has no learned positions; SFT
trains the new ones) and fine-tuned on rows of that length.

Prints a markdown table (the record lives in docs/BENCHMARKS.md). Never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

TASKS = "calc_add4,calc_sub4,calc_mul3,tool_compare2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a finished speedrun (its base/ is fine-tuned)")
    ap.add_argument("--n", type=int, default=500, help="held-out items per task")
    ap.add_argument("--steps", type=int, default=240, help="SFT steps on the tool tasks")
    ap.add_argument("--batch", type=int, default=8, help="SFT rows per step")
    ap.add_argument("--context", type=int, default=384, help="context of the fine-tuned copy (and SFT row length)")
    ap.add_argument("--out", type=Path, default=None, help="the tool-trained model (default: RUN/sft-tools)")
    args = ap.parse_args()

    from llmkit.checkpoint import load_model
    from llmkit.tasks.runner import evaluate_tasks
    from llmkit.tokenizer import Tokenizer
    from llmkit.train.finetune import task_examples

    out = args.out or args.run_dir / "sft-tools"
    if not (out / "config.json").is_file():
        t = time.perf_counter()
        base = out.with_name(out.name + "-base")
        if not base.is_dir():
            shutil.copytree(args.run_dir / "base", base)
            config = json.loads((base / "config.json").read_text())
            config["max_position_embeddings"] = max(config["max_position_embeddings"], args.context)
            (base / "config.json").write_text(json.dumps(config, indent=2))
        cmd = [sys.executable, "-m", "llmkit.cli", "sft", str(base)]
        cmd += [f"sft.max_steps={args.steps}", f"sft.seq_len={args.context}", f"sft.batch_size={args.batch}"]
        cmd += ["sft.lr=0.002", "sft.warmup_steps=10"]
        cmd += ["sft.eval_examples=50", f"sft.ckpt_every={args.steps // 2}", "--tasks", TASKS, "--out", str(out)]
        subprocess.run(cmd, check=True)
        print(f"SFT on {TASKS}: {args.steps} steps in {time.perf_counter() - t:.0f} s\n")
    tok = Tokenizer.load(out)
    model = load_model(out).eval()
    test = task_examples(TASKS.split(","), "test", args.n, 0)
    rows = {}
    for tools in (True, False):
        t = time.perf_counter()
        r = evaluate_tasks(model, tok, test, mode="chat", tools=tools)
        print(f"{'with' if tools else 'without'} the calculator: {len(test)} items in {time.perf_counter() - t:.0f} s")
        rows[tools] = r.table()
    print("\n| task | with the calculator | without | n |\n| --- | ---: | ---: | ---: |")
    for task, with_tool in rows[True].items():
        alone = rows[False][task]
        print(
            f"| {task} | {100 * with_tool['accuracy']:.1f} ± {100 * with_tool['stderr']:.1f}% "
            f"| {100 * alone['accuracy']:.1f} ± {100 * alone['stderr']:.1f}% | {with_tool['n']} |"
        )


if __name__ == "__main__":
    main()
