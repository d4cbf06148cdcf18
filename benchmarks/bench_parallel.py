"""DDP vs FSDP2, with and without activation checkpointing: memory per process and tokens/s.

Runs the real training step (the Trainer's ``train_step``, fp32) of the ``cpu-small`` model under
``torchrun --nproc_per_node=2`` (gloo) for each variant, alternating variants over ``--rounds``
rounds (best tokens/s, lowest memory), on random tokens so no corpus is needed. Per process it
reports the peak RSS, the training memory (peak RSS minus the RSS before the model was built), and
the bytes of model state it holds (parameters + gradients + optimizer state, local shards only).

    python benchmarks/bench_parallel.py                      # 4 variants x 2 rounds, ~5 min on 2 cores
    python benchmarks/bench_parallel.py --rounds 1 --steps 2 --batch-size 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = [("ddp", False), ("ddp", True), ("fsdp", False), ("fsdp", True)]


def worker(args) -> None:
    """One process of a torchrun launch: a few timed steps, then one JSON line per process."""
    import resource
    import time

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from llmkit.config import resolve
    from llmkit.model.transformer import Transformer
    from llmkit.train.pretrain import PretrainTask
    from llmkit.train.trainer import Trainer

    torch.set_num_threads(1)
    cfg = resolve(
        args.preset,
        [
            f"train.parallel={args.parallel}",
            f"train.activation_checkpointing={'true' if args.checkpointing else 'false'}",
            "train.dtype=fp32",
            "train.device=cpu",
            f"train.batch_size={args.batch_size}",
            "train.grad_accum=1",
            f"train.max_steps={args.steps + 1}",
            "train.eval_every=0",
        ],
    )

    class RandomTokens:
        def __init__(self, n, vocab):
            self.t = np.random.default_rng(0).integers(0, vocab, n)

        def __len__(self):
            return len(self.t)

        def window(self, start, length):
            return self.t[start : start + length]

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # MiB
    torch.manual_seed(0)
    model = Transformer(cfg.model)
    task = PretrainTask(
        RandomTokens(1_000_000, cfg.model.vocab_size),
        {},
        cfg.train.seq_len,
        cfg.train.batch_size,
        torch.ones(cfg.model.vocab_size, dtype=torch.long),
    )
    trainer = Trainer(model, task, cfg.train, Path(tempfile.mkdtemp()))
    trainer.train_step()  # warm-up: allocations, optimizer state
    dist.barrier()
    t = time.perf_counter()
    tokens = sum(trainer.train_step()["tokens"] for _ in range(args.steps))
    dt = time.perf_counter() - t

    def local_bytes(x):
        x = x.to_local() if isinstance(x, DTensor) else x
        return x.numel() * x.element_size()

    params = list(trainer.raw_model.parameters())
    state = sum(local_bytes(p) for p in params)
    state += sum(
        local_bytes(v)
        for opt in trainer.optimizers
        for s in opt.state.values()
        for v in s.values()
        if torch.is_tensor(v)
    )
    state += sum(local_bytes(p) for p in params)  # gradients: same layout as the parameters (freed after the step)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    row = {"rank": dist.get_rank(), "tokens_per_s": tokens / dt, "peak_mib": peak, "train_mib": peak - rss_before}
    print("RESULT " + json.dumps({**row, "state_mib": state / 2**20}), flush=True)


def launch(parallel: str, checkpointing: bool, args, port: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        __file__,
        "--worker",
        "--parallel",
        parallel,
        *(["--checkpointing"] if checkpointing else []),
        "--preset",
        args.preset,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    rows = [json.loads(line[len("RESULT ") :]) for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    if r.returncode != 0 or len(rows) != 2:
        raise SystemExit(f"{parallel} (checkpointing={checkpointing}) failed:\n{r.stderr[-3000:]}")
    return {
        "tokens_per_s": rows[0]["tokens_per_s"],  # global: every process's tokens over the same time
        "peak_mib": max(x["peak_mib"] for x in rows),
        "train_mib": max(x["train_mib"] for x in rows),
        "state_mib": max(x["state_mib"] for x in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--parallel", default="ddp", help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--preset", default="cpu-small", help="model and sequence length from this preset")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps per run (after one warm-up)")
    ap.add_argument("--batch-size", type=int, default=2, help="sequences per process per step")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; best tokens/s, lowest memory")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    best: dict[tuple[str, bool], dict] = {}
    for r in range(args.rounds):
        for i, (parallel, ckpt) in enumerate(VARIANTS):
            got = launch(parallel, ckpt, args, port=29640 + 4 * r + i)
            old = best.get((parallel, ckpt))
            best[(parallel, ckpt)] = (
                got if old is None else {k: (max if k == "tokens_per_s" else min)(old[k], got[k]) for k in got}
            )
    base = best[("ddp", False)]
    print(f"{args.preset}, 2 processes (gloo), fp32, {args.batch_size} sequences per process, best of {args.rounds}")
    print(
        "| parallel | activation checkpointing | tokens/s | vs DDP | model state / process "
        "| training memory / process | vs DDP | peak RSS / process |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (parallel, ckpt), x in best.items():
        speed, memory = x["tokens_per_s"] / base["tokens_per_s"], x["train_mib"] / base["train_mib"]
        print(
            f"| {parallel} | {'on' if ckpt else 'off'} | {x['tokens_per_s']:,.0f} | {speed:.2f}x "
            f"| {x['state_mib']:,.0f} MiB | {x['train_mib']:,.0f} MiB | {memory:.2f}x | {x['peak_mib']:,.0f} MiB |"
        )


if __name__ == "__main__":
    main()
