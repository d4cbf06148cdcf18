"""``llmkit distill --teacher DIR --out DIR``: a small student learns a large teacher's distributions."""

from __future__ import annotations

from pathlib import Path

ORDER = 64  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    from llmkit.commands._finetune import add_finetune_args

    p = sub.add_parser(
        "distill",
        help="knowledge distillation: train a student on a teacher's next-token distributions",
        description="Distil a teacher into a student that shares its tokenizer: the student (--student, or a new "
        "model shaped by the preset's model.* settings) learns the teacher's softened next-token distributions "
        "(forward KL, reverse KL or a mix) plus the ordinary next-token loss, on a run's pretraining shards "
        "or on chat conversations (--data). "
        "Settings: distill.*; distill.alpha=0 trains the same student without the teacher.",
    )
    add_finetune_args(p, model=False)
    p.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint")
    p.add_argument("--student", type=Path, default=None, help="student checkpoint (default: a new model, model.*)")
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run directory whose data/ shards to train on (default: the teacher's run, its parent directory)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="instead of a run's shards: chat conversations (JSONL/JSON/Parquet, a saved dataset or hf:NAME, "
        "as llmkit sft --data reads); the loss covers the assistant's tokens",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.commands._finetune import resolve_finetune
    from llmkit.stages.data import load_prepared
    from llmkit.train.distill import run_distill

    cfg = resolve_finetune(args, "distill", teacher=args.teacher, data=args.data)
    if cfg.distill.data not in ("", "pretrain"):
        run_distill(args.teacher, args.out, cfg, None, args.student)
        return 0
    run_dir = args.run_dir or Path(args.teacher).resolve().parent
    if not (run_dir / "data" / "stats.json").is_file():
        from llmkit.errors import DataError

        raise DataError(f"{run_dir}: no prepared data (data/stats.json); pass --run-dir of a run whose data stage ran")
    run_distill(args.teacher, args.out, cfg, load_prepared(run_dir), args.student)
    return 0
