"""Training throughput, MFU and peak memory of the CPU presets.

For each preset and each of {fp32, bf16 autocast} x {eager, torch.compile}, runs a few optimizer
steps of the real training step (the Trainer's ``train_step`` on random tokens, so no corpus is
needed) in a fresh subprocess, and reports tokens/s, MFU against the matmul peak measured in the
same process for that dtype, the ratio to fp32-eager, and the peak RSS of the process.

    python benchmarks/bench_train.py                  # cpu-tiny and cpu-small, all variants
    python benchmarks/bench_train.py --presets cpu-tiny --steps 6 --no-compile
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORKER = r"""
import json, resource, sys, time, tempfile
import numpy as np, torch
from llmkit.config import resolve
from llmkit.model.transformer import Transformer
from llmkit.train.mfu import measure_peak_flops
from llmkit.train.pretrain import PretrainTask
from llmkit.train.trainer import Trainer

preset, dtype, compile_, steps = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
cfg = resolve(preset, [f"train.dtype={dtype}", f"train.compile={'true' if compile_ else 'false'}",
                       f"train.max_steps={steps + 2}", "train.eval_every=0"])

class Random:
    def __init__(self, n, v):
        self.t = np.random.default_rng(0).integers(0, v, n)
    def __len__(self):
        return len(self.t)
    def window(self, s, n):
        return self.t[s:s + n]

torch.manual_seed(0)
model = Transformer(cfg.model)
data = Random(2_000_000, cfg.model.vocab_size)
token_bytes = torch.ones(cfg.model.vocab_size, dtype=torch.long)
task = PretrainTask(data, {}, cfg.train.seq_len, cfg.train.batch_size, token_bytes)
trainer = Trainer(model, task, cfg.train, tempfile.mkdtemp())
for _ in range(2):  # warm-up (and compilation)
    trainer.train_step()
t = time.perf_counter()
tokens = sum(trainer.train_step()["tokens"] for _ in range(steps))
dt = time.perf_counter() - t
tps = tokens / dt
peak = measure_peak_flops("cpu", trainer.dtype)
print(json.dumps({"tokens_per_s": tps, "mfu": tps * model.flops_per_token(cfg.train.seq_len) / peak,
                  "peak_gflops": peak / 1e9, "params_m": model.num_params() / 1e6,
                  "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def run(preset: str, dtype: str, compile_: bool, steps: int) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", WORKER, preset, dtype, "1" if compile_ else "0", str(steps)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["cpu-tiny", "cpu-small"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    variants = [("fp32", False), ("bf16", False)]
    if not args.no_compile:
        variants += [("fp32", True), ("bf16", True)]
    print("| preset | params | dtype | compile | tokens/s | vs fp32 eager | MFU | matmul peak | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        base = None
        for dtype, comp in variants:
            r = run(preset, dtype, comp, args.steps)
            if "error" in r:
                print(f"| {preset} | | {dtype} | {'on' if comp else 'off'} | failed: {r['error'][:60]} | | | | |")
                continue
            base = base or r["tokens_per_s"]
            print(
                f"| {preset} | {r['params_m']:.1f}M | {dtype} | {'on' if comp else 'off'} | "
                f"{r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base:.2f}x | {100 * r['mfu']:.1f}% | "
                f"{r['peak_gflops']:.0f} GFLOP/s | {r['rss_gib']:.2f} GiB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
