"""Evaluation throughput: ``llmkit eval``'s runner against lm-eval's ``hf`` backend, same checkpoint and task.

The task is a built-in multiple-choice task (default ``shakespeare-next-line``: 200 items x 4 choices,
0-shot) written out as a local lm-eval task with the same prompt, delimiters and choices. Each system
scores the whole task with its model already loaded (loading is not timed); runs alternate, the best
of ``--repeats`` counts. Three rows: llmkit's runner (what ``llmkit eval`` calls), lm-eval through the
``llmkit`` adapter, and lm-eval's own ``hf`` backend (transformers, ``add_bos_token=True`` so both see
the BOS token the model was trained with). Accuracies are printed to show the runs scored the same
thing.

    python benchmarks/bench_eval.py --checkpoint runs/cpu-tiny/base
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/cpu-tiny/base"))
    ap.add_argument("--task", default="shakespeare-next-line")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    import llmkit
    from llmkit.eval.harness import LLMKitLM
    from llmkit.eval.runner import run_task
    from llmkit.eval.taskfile import load_task

    task = load_task(args.task)
    tmp = Path(tempfile.mkdtemp())
    data = tmp / "items.jsonl"
    data.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in task.items), encoding="utf-8")
    (tmp / "t.yaml").write_text(
        "task: bench_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        f"doc_to_text: {json.dumps('{{' + task.template.strip('{}') + '}}')}\n"
        'doc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        f"target_delimiter: {json.dumps(task.target_delimiter)}\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n",
        encoding="utf-8",
    )
    manager = TaskManager(include_path=str(tmp), include_defaults=False)
    lm = llmkit.load(args.checkpoint, device="cpu", dtype="float32", inference_only=True)
    adapter = LLMKitLM(loaded=lm, batch_size=args.batch_size)
    hf = HFLM(
        pretrained=str(args.checkpoint), device="cpu", dtype="float32", batch_size=args.batch_size, add_bos_token=True
    )
    threads = torch.get_num_threads()

    def ours():
        return run_task(lm.model, lm.tokenizer, task, batch_size=args.batch_size).metrics["acc"]

    def harness(model):
        def go():
            out = simple_evaluate(
                model=model, tasks=["bench_mc"], task_manager=manager, num_fewshot=0, bootstrap_iters=0
            )
            return out["results"]["bench_mc"]["acc,none"]

        return go

    systems = {
        "llmkit eval (runner)": ours,
        "lm-eval + llmkit adapter": harness(adapter),
        "lm-eval hf backend": harness(hf),
    }
    best = {name: float("inf") for name in systems}
    acc = {}
    for _ in range(args.repeats):
        for name, fn in systems.items():
            t0 = time.perf_counter()
            acc[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    n = len(task.items)
    ref = best["lm-eval hf backend"]
    print(
        f"task {args.task}: {n} items x {len(task.items[0]['choices'])} choices, 0-shot; checkpoint {args.checkpoint}; "
        f"batch {args.batch_size}; {threads} threads; best of {args.repeats}"
    )
    print("| system | seconds | examples/s | vs lm-eval hf | acc |")
    print("|---|---:|---:|---:|---:|")
    for name in systems:
        print(f"| {name} | {best[name]:.2f} | {n / best[name]:.1f} | {ref / best[name]:.2f}x | {acc[name]:.3f} |")


if __name__ == "__main__":
    main()
