"""The scaling sweep: models of several sizes trained for several compute budgets, one point each.

A point is (model shape, budget C). Its token budget D follows from C = flops_per_token(N) * D, where
flops per token are ``6N`` plus attention's ``12 * layers * width * seq_len`` (PaLM's count) and N
counts the parameters that multiply every token (the embedding lookup excluded, the tied output head
included). Every point trains from scratch through the one training loop with a cosine schedule
spanning exactly its own steps (a schedule cut short would understate small-D points, Hoffmann et
al.'s correction to Kaplan et al.), then records its final validation loss.

Resumable by construction: a finished point's ``result.json`` is kept and skipped on the next run; a
point killed mid-way resumes from its own checkpoints. Points run in parallel in ``jobs`` processes,
each with its share of the CPU threads (or its own GPU). Each finished point prints one line.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from llmkit.console import say
from llmkit.eval.perplexity import EvalError

HEAD_DIM = 16


@dataclass(frozen=True)
class Shape:
    width: int
    layers: int

    @property
    def name(self) -> str:
        return f"{self.width}x{self.layers}"

    def model_config(self, vocab_size: int, context: int, special: tuple[int, int, int]):
        from llmkit.config import ModelConfig

        bos, eos, pad = special
        return ModelConfig(
            vocab_size=vocab_size,
            hidden_size=self.width,
            num_hidden_layers=self.layers,
            num_attention_heads=max(1, self.width // HEAD_DIM),
            max_position_embeddings=context,
            tie_word_embeddings=True,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad,
        )


def parse_shapes(text: str) -> list[Shape]:
    """``"32x1,64x2"`` -> shapes (width x layers); widths must be multiples of 16 (the head size)."""
    shapes = []
    for part in text.split(","):
        try:
            w, n = (int(x) for x in part.strip().lower().split("x"))
        except ValueError:
            raise EvalError(f"--sizes: {part.strip()!r} is not WIDTHxLAYERS (for example 64x2)") from None
        if w <= 0 or n <= 0 or w % HEAD_DIM:
            raise EvalError(f"--sizes: {part.strip()!r}: width must be a positive multiple of {HEAD_DIM}, layers > 0")
        shapes.append(Shape(w, n))
    return sorted(set(shapes), key=lambda s: (s.width * s.width * s.layers, s.width))


def matmul_params(cfg) -> int:
    """N: parameters that multiply every token (no embedding lookup; the output head counted)."""
    return cfg.num_params(include_embeddings=False) + cfg.vocab_size * cfg.hidden_size


def flops_per_token(cfg, seq_len: int) -> float:
    """Training FLOPs per token: 6N + attention (same count as ``Transformer.flops_per_token``)."""
    return 6 * matmul_params(cfg) + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


@dataclass
class Point:
    shape: str
    budget: float
    """The nominal compute budget (FLOPs) this point belongs to (IsoFLOP groups by it)."""
    steps: int
    N: int
    D: int
    compute: float
    """FLOPs actually spent: flops_per_token * D (within one step of the budget)."""

    @property
    def name(self) -> str:
        return f"C{self.budget:.0e}-{self.shape}".replace("+", "")


def plan(
    shapes: list[Shape], budgets: list[float], vocab_size: int, seq_len: int, tokens_per_step: int, min_steps: int
) -> list[Point]:
    """Every (shape, budget) with at least ``min_steps`` steps; the smallest model must fit every
    budget, or the sweep is an error (a budget too small to train anything measures nothing)."""
    if not shapes or not budgets:
        raise EvalError("scaling: give at least one size (--sizes) and one budget (--budgets)")
    points = []
    special = (1, 2, 0)
    for budget in sorted(budgets):
        smallest = shapes[0].model_config(vocab_size, seq_len, special)
        need = min_steps * tokens_per_step * flops_per_token(smallest, seq_len)
        if budget < need:
            raise EvalError(
                f"--budgets: {budget:.2e} FLOPs does not fit the smallest model ({shapes[0].name}: {min_steps} "
                f"steps need {need:.2e}); raise the budget, add a smaller size or lower --min-steps"
            )
        for shape in shapes:
            cfg = shape.model_config(vocab_size, seq_len, special)
            fpt = flops_per_token(cfg, seq_len)
            steps = round(budget / (fpt * tokens_per_step))
            if steps < min_steps:
                continue
            D = steps * tokens_per_step
            points.append(Point(shape.name, budget, steps, matmul_params(cfg), D, fpt * D))
    return points


@dataclass
class SweepSetup:
    """What every point shares: the run directory with the data stage's outputs, and training knobs."""

    run_dir: str
    out_dir: str
    train: dict
    """TrainConfig fields (lr, batch_size, seq_len, seed ...); max_steps is set per point."""
    eval_batches: int = 16
    threads: int = 0


def _train_point(setup: SweepSetup, point: Point) -> dict:
    """Train one point to its last step (resuming if it was interrupted) and record its loss."""
    import torch

    from llmkit.config import TrainConfig
    from llmkit.data.shards import TokenShards
    from llmkit.files import atomic_write_json
    from llmkit.model.transformer import Transformer
    from llmkit.tokenizer import Tokenizer
    from llmkit.train.pretrain import PretrainTask
    from llmkit.train.trainer import Trainer

    if setup.threads:
        torch.set_num_threads(setup.threads)
    run_dir, out = Path(setup.run_dir), Path(setup.out_dir) / "points" / point.name
    tok = Tokenizer.load(run_dir / "tokenizer")
    stats = json.loads((run_dir / "data" / "stats.json").read_text(encoding="utf-8"))
    fp = tok.fingerprint()
    train = TokenShards(run_dir / "data" / "train", expect_tokenizer=fp)
    val = {n: TokenShards(run_dir / "data" / "val" / n, expect_tokenizer=fp) for n in stats["val_sets"]}
    knobs = dict(setup.train)
    cfg = TrainConfig(
        **{
            **knobs,
            "max_steps": point.steps,
            "warmup_steps": max(1, min(knobs.get("warmup_steps", 0) or point.steps // 10, point.steps // 5)),
            "eval_every": 0,
            "ckpt_every": max(point.steps // 4, 100),  # resumable every quarter of a long point
            "keep_last": 1,
            "log_every": point.steps,
            "eval_batches": setup.eval_batches,
        }
    )
    shape = Shape(*(int(x) for x in point.shape.split("x")))
    vocab = 64 * -(-tok.vocab_size // 64)
    mcfg = shape.model_config(vocab, cfg.seq_len, (tok.bos_id, tok.eos_id, tok.pad_id))
    tok.model_max_length = cfg.seq_len
    torch.manual_seed(cfg.seed)
    model = Transformer(mcfg)
    task = PretrainTask(
        train, val, cfg.seq_len, cfg.batch_size, tok.token_bytes(), seed=cfg.seed, eval_batches=setup.eval_batches
    )
    t0 = time.perf_counter()
    result = Trainer(model, task, cfg, out, tokenizer=tok, extra_config={"llmkit_stage": "scaling"}).fit()
    row = {
        **asdict(point),
        "name": point.name,
        "val_loss": result.final_eval["val_loss"],
        "val_bpb": result.final_eval.get("val_bpb"),
        "seconds": time.perf_counter() - t0,
        "tokens_per_s": result.tokens_per_s,
    }
    atomic_write_json(out / "result.json", row)
    import shutil

    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the final model stays; resume state is no longer needed
    return row


def read_results(out_dir: Path) -> list[dict]:
    """Every finished point's record (``points/*/result.json``)."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((Path(out_dir) / "points").glob("*/result.json"))]


def run_sweep(setup: SweepSetup, points: list[Point], jobs: int = 1) -> list[dict]:
    """Train every point not yet finished, ``jobs`` at a time; returns all finished points' records."""
    done = {r["name"] for r in read_results(Path(setup.out_dir))}
    todo = [p for p in points if p.name not in done]
    total = len(points)
    kept = len(done & {p.name for p in points})
    say(f"scaling: {total} points ({kept} already finished), {len(todo)} to train, {jobs} at a time")
    if jobs > 1 and not setup.threads:
        setup.threads = max(1, (os.cpu_count() or 1) // jobs)
    t_start = time.perf_counter()
    finished = total - len(todo)

    def report(row: dict) -> None:
        nonlocal finished
        finished += 1
        say(
            f"scaling [{finished}/{total}] {row['name']}: N={row['N'] / 1e6:.3f}M D={row['D'] / 1e6:.2f}M "
            f"C={row['compute']:.2e} -> val_loss {row['val_loss']:.4f} ({row['seconds']:.0f} s, "
            f"{row['tokens_per_s']:,.0f} tok/s; {time.perf_counter() - t_start:.0f} s elapsed)"
        )

    # the largest first, so the longest runs do not end up alone at the end of a parallel sweep
    todo.sort(key=lambda p: -p.compute)
    if jobs <= 1:
        for p in todo:
            report(_train_point(setup, p))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_train_point, setup, p) for p in todo]
            for fut in as_completed(futures):
                report(fut.result())
    names = {p.name for p in points}
    return [r for r in read_results(Path(setup.out_dir)) if r["name"] in names]
