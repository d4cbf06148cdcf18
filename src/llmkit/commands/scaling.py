"""``llmkit scaling``: a sweep over model sizes and compute budgets, fitted scaling laws, plots."""

from __future__ import annotations

ORDER = 71  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    from llmkit.commands._common import add_run_args

    p = sub.add_parser(
        "scaling",
        help="scaling-law sweep: train models of several sizes under compute budgets, fit L(N, D)",
        description="Train every model size (--sizes) for every compute budget (--budgets, FLOPs = 6ND + attention) "
        "on the preset's corpus, record each final validation loss, then fit Chinchilla's L(N, D) = E + A/N^alpha + "
        "B/D^beta (approach 3) and the IsoFLOP exponents with bootstrap intervals, and predict the compute-optimal "
        "N and D for --predict. Finished points are kept: re-running resumes. Writes RUN/scaling/.",
    )
    add_run_args(p, default_preset="scaling-cpu")
    p.add_argument(
        "--sizes",
        default="48x1,64x1,64x2,96x2,128x3,192x3",
        help="model shapes WIDTHxLAYERS, comma-separated (default: 48x1,64x1,64x2,96x2,128x3,192x3)",
    )
    p.add_argument(
        "--budgets",
        default="6e11,2e12,6e12",
        help="compute budgets in FLOPs, comma-separated (default: 6e11,2e12,6e12)",
    )
    p.add_argument("--jobs", type=int, default=1, help="points trained at once, in separate processes (default: 1)")
    p.add_argument("--min-steps", type=int, default=20, help="skip points with fewer optimizer steps (default: 20)")
    p.add_argument("--predict", type=float, default=1e18, help="budget (FLOPs) to predict the optimal N, D for")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the intervals (default: 200)")
    p.add_argument("--fit-only", action="store_true", help="do not train: refit and replot the finished points")
    p.add_argument(
        "--emergence-task",
        default="shakespeare-last-word",
        help="task each point's model is scored on for the emergence plot ('none' to skip)",
    )
    p.set_defaults(func=run)


def _floats(text: str, flag: str) -> list[float]:
    from llmkit.eval.perplexity import EvalError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EvalError(f"{flag}: {text!r} is not a comma-separated list of numbers (e.g. 1e13,3e13)") from None


def run(args) -> int:
    from pathlib import Path

    from llmkit.commands._common import resolve_run
    from llmkit.console import say
    from llmkit.eval import scaling, sweep
    from llmkit.eval.perplexity import EvalError

    cfg, run_dir = resolve_run(args)
    out = Path(run_dir) / "scaling"
    shapes = sweep.parse_shapes(args.sizes)
    budgets = _floats(args.budgets, "--budgets")
    tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.train.seq_len
    points = sweep.plan(shapes, budgets, cfg.tokenizer.vocab_size, cfg.train.seq_len, tokens_per_step, args.min_steps)
    if args.fit_only:
        results = [r for r in sweep.read_results(out) if r["name"] in {p.name for p in points}]
    else:
        from llmkit.pipeline import run as run_pipeline

        run_pipeline(cfg, run_dir, until="data")
        train = {
            k: getattr(cfg.train, k)
            for k in (
                "batch_size",
                "seq_len",
                "optimizer",
                "lr",
                "muon_lr",
                "schedule",
                "weight_decay",
                "grad_clip",
                "dtype",
                "seed",
                "device",
                "warmup_steps",
                "grad_accum",
                "min_lr_ratio",
            )
        }
        setup = sweep.SweepSetup(
            run_dir=str(run_dir), out_dir=str(out), train=train, eval_batches=cfg.train.eval_batches
        )
        results = sweep.run_sweep(setup, points, jobs=args.jobs)
    if len(results) < 5:
        raise EvalError(f"{out}: {len(results)} finished points; the fits need at least 5 (run without --fit-only)")
    fits = scaling.analyse(results, args.predict, bootstrap=args.bootstrap)
    if args.emergence_task != "none":
        from llmkit.eval.emergence import emergence

        emergence(out, results, args.emergence_task)
    path = scaling.write_report(out, results, fits)
    say(f"scaling: {path}")
    print(path.read_text(encoding="utf-8"))
    return 0
