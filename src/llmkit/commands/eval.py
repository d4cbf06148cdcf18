"""``llmkit eval CKPT [CKPT ...]``: bits per byte and few-shot task accuracy, side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 70  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    from llmkit.commands._common import add_model_args
    from llmkit.eval.evaluate import DEFAULT_TASKS
    from llmkit.eval.taskfile import builtin_tasks

    p = sub.add_parser(
        "eval",
        help="evaluate checkpoints: bits per byte, few-shot accuracy, lm-eval tasks",
        description="Score one or more checkpoints on text (bits per byte, perplexity; a sliding window for long "
        "documents) and on tasks scored by log-likelihood (accuracy and length-normalised accuracy with standard "
        "errors, zero- or few-shot). Writes results.json and results.md (and icl.png, accuracy against shots, "
        "when several --shots are given).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"built-in tasks: {', '.join(builtin_tasks())}\n"
        "a task file is YAML (name, kind, template, data|items|generator) or JSONL "
        '({"question", "choices", "answer"} per line); see docs/eval.md',
    )
    p.add_argument("checkpoints", nargs="+", type=Path, metavar="CKPT", help="checkpoint directories")
    p.add_argument(
        "--task",
        action="append",
        default=None,
        metavar="NAME|FILE",
        help=f"a built-in task or a task file (repeat; default: {', '.join(DEFAULT_TASKS)}; 'none' for none)",
    )
    p.add_argument(
        "--text",
        action="append",
        default=None,
        metavar="SOURCE",
        help="text to score in bits per byte: a corpus name (its held-out split), file, directory or JSONL (repeat)",
    )
    p.add_argument("--shots", type=int, nargs="+", default=[0], metavar="K", help="shot counts (default: 0)")
    p.add_argument(
        "--suite",
        action="append",
        default=None,
        metavar="TASK",
        help="a generation task of the task suite (`llmkit tasks list`), replies checked by its verifier (repeat)",
    )
    p.add_argument(
        "--mode",
        choices=["few_shot", "chat"],
        default="few_shot",
        help="suite prompts: few_shot text for base models, or the chat template for tuned models (default: few_shot)",
    )
    p.add_argument(
        "--cot",
        choices=["on", "off", "both"],
        default="on",
        help="suite shots with chain-of-thought solutions (on), final answers only (off), or both (default: on)",
    )
    p.add_argument("--seed", type=int, default=1234, help="seed of the shots' choice (default: 1234)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default: 16)")
    p.add_argument("--limit", type=int, default=0, help="score only the first N items of each task (default: all)")
    p.add_argument("--window", type=int, default=0, help="tokens per window for text (default: model context)")
    p.add_argument("--stride", type=int, default=0, help="new tokens per window after the first (default: half)")
    p.add_argument("--max-bytes", type=int, default=100_000, help="bytes of each text source to score (0 = all)")
    p.add_argument("--log-samples", action="store_true", help="keep each item's prompt and scores in results.json")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: RUN/eval beside the first checkpoint, else ./eval)",
    )
    p.add_argument(
        "--lm-eval",
        default=None,
        metavar="TASKS",
        help="instead: run lm-eval harness tasks (comma-separated) on the first checkpoint through the llmkit adapter",
    )
    p.add_argument("--include-path", type=Path, default=None, help="directory of extra lm-eval task YAMLs")
    add_model_args(p)
    p.set_defaults(func=run)


def _default_out(first: Path) -> Path:
    run_dir = first.resolve().parent
    return run_dir / "eval" if (run_dir / "config.yaml").is_file() else Path("eval")


def run(args) -> int:
    from llmkit.eval.evaluate import DEFAULT_TASKS, EvalOptions, evaluate

    out = args.out or _default_out(args.checkpoints[0])
    if args.lm_eval:
        from llmkit.eval.harness import run_harness

        table = run_harness(
            args.checkpoints[0],
            args.lm_eval.split(","),
            out,
            num_fewshot=args.shots[0],
            batch_size=args.batch_size,
            limit=args.limit or None,
            include_path=args.include_path,
            device=args.device,
            dtype=args.dtype,
            seed=args.seed,
        )
        print(table)
        return 0
    tasks = [t for t in (args.task or ([] if args.suite else DEFAULT_TASKS)) if t != "none"]
    opts = EvalOptions(
        tasks=tasks,
        texts=args.text or [],
        shots=args.shots,
        seed=args.seed,
        batch_size=args.batch_size,
        limit=args.limit,
        window=args.window,
        stride=args.stride,
        max_bytes=args.max_bytes,
        log_samples=args.log_samples,
        suite=args.suite or [],
        mode=args.mode,
        cot={"on": [True], "off": [False], "both": [True, False]}[args.cot],
    )
    evaluate(args.checkpoints, opts, out, device=args.device, dtype=args.dtype)
    print((out / "results.md").read_text(encoding="utf-8"))
    return 0
