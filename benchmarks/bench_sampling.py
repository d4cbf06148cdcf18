"""Drawing sampled tokens: llmkit's inverse-CDF ``draw`` against ``torch.multinomial``, in one process.

* ``draw``: one draw per row of softmax probabilities (N rows of V), each row with its own seeded
  generator as the engine keeps them (a request's tokens never depend on its batch), for the
  vocabularies of cpu-tiny (4,096), Llama 2 (32,000) and Qwen2 (151,936). ``torch.multinomial``
  runs per row with the same generators, as the engine did before.
* ``engine``: ``Engine.generate`` with temperature 1.0 on a random cpu-tiny-shaped model, 32
  prompts x 64 new tokens, EOS ignored, with each drawing function in turn (best of
  ``--repeats``; the two alternate).

    python benchmarks/bench_sampling.py
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from llmkit.config import resolve
from llmkit.infer import sampling
from llmkit.infer.engine import Engine
from llmkit.infer.sampling import SamplingParams
from llmkit.model.transformer import Transformer


def multinomial_per_row(weights: torch.Tensor, generators=None) -> torch.Tensor:
    """The peer: torch.multinomial on each row with its own generator (what sampling did before)."""
    out = torch.empty(weights.size(0), dtype=torch.long)
    for i, g in enumerate(generators or [None] * weights.size(0)):
        out[i] = torch.multinomial(weights[i], 1, generator=g)[0]
    return out


def best(fn, repeats: int, inner: int = 1) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t) / inner)
    return min(times)


def bench_draw(repeats: int) -> None:
    print("| vocabulary | rows | torch.multinomial per row us | llmkit draw us | x |")
    print("|---|---|---|---|---|")
    for V in (4096, 32000, 151936):
        for N in (1, 8, 32):
            probs = torch.randn(N, V, generator=torch.Generator().manual_seed(0)).mul_(3).softmax(-1)
            gens = [torch.Generator().manual_seed(i) for i in range(N)]
            theirs = best(lambda: multinomial_per_row(probs, gens), repeats, 20)  # noqa: B023
            ours = best(lambda: sampling.draw(probs, gens), repeats, 20)  # noqa: B023
            print(f"| {V:,} | {N} | {theirs * 1e6:,.0f} | {ours * 1e6:,.0f} | {theirs / ours:.1f} |")


def bench_engine(repeats: int) -> None:
    torch.manual_seed(0)
    cfg = resolve("cpu-tiny").model  # the preset's shape
    model = Transformer(cfg)
    engine = Engine(model, max_batch=32)
    prompts = [
        [1, *torch.randint(3, 4096, (32,), generator=torch.Generator().manual_seed(i)).tolist()] for i in range(32)
    ]
    params = SamplingParams(max_new_tokens=64, temperature=1.0, ignore_eos=True, seed=0)
    original = sampling.draw
    results = {}
    for _ in range(repeats):
        for name, fn in (("torch.multinomial per row", multinomial_per_row), ("llmkit draw", original)):
            sampling.draw = fn
            t = time.perf_counter()
            engine.generate(prompts, params)
            results[name] = min(results.get(name, float("inf")), time.perf_counter() - t)
    sampling.draw = original
    tokens = 32 * 64
    base = results["torch.multinomial per row"]
    print("\n| engine, 32 rows x 64 sampled tokens (cpu-tiny shape) | tokens/s | x |")
    print("|---|---|---|")
    for name, t in results.items():
        print(f"| {name} | {tokens / t:,.0f} | {base / t:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}\n"
    )
    with torch.inference_mode():
        bench_draw(args.repeats)
    bench_engine(args.repeats)


if __name__ == "__main__":
    main()
