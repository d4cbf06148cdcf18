"""The kernels behind a decode step, measured against each other in one process.

These are the measurements behind the choices in ``llmkit/model/inference.py`` and
``llmkit/infer/kv_cache.py``:

* ``matmul``: one model's worth of weight matrices (the cpu-tiny and 100M shapes of
  bench_inference.py, q/k/v and gate/up fused), multiplied by M = 1, 16 and 128 rows, cycling
  through all matrices so they come from memory as in a real step. Kernels: ``F.linear`` (what
  ``nn.Linear`` and transformers run), ``x @ W^T`` on a transposed copy, oneDNN on nn.Linear's
  layout, oneDNN on a packed (blocked) copy; fp32 and bf16. Best of ``--repeats``.
* ``attention``: one decode step's attention (one query per row over S cached keys, GQA) with
  SDPA in fp32 and bf16, and the hand-written two-matmul form in bf16.

    python benchmarks/bench_kernels.py

Prints markdown tables; the record lives in docs/BENCHMARKS.md. Never run by the tests.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from llmkit.model.inference import onednn_linear_works

SHAPES = {  # (in, out) of every matmul in one decode step: per layer qkv, o, gate_up, down; then the head
    "cpu-tiny": [(256, 512), (256, 256), (256, 1408), (704, 256)] * 6 + [(256, 4096)],
    "100M": [(768, 1280), (768, 768), (768, 4096), (2048, 768)] * 12 + [(768, 32000)],
}


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@torch.inference_mode()
def bench_matmul(args) -> list[dict]:
    lp = torch.ops.mkldnn._linear_pointwise
    rows = []
    for model, shapes in SHAPES.items():
        g = torch.Generator().manual_seed(0)
        dense = [torch.randn(n, k, generator=g) for k, n in shapes]  # (N, K) as nn.Linear keeps them
        mib = sum(w.numel() for w in dense) * 4 / 2**20
        for dtype in (torch.float32, torch.bfloat16):
            ws = [w.to(dtype) for w in dense]
            kernels = {
                "F.linear (N, K)": (ws, lambda x, w: F.linear(x, w)),
                "x @ W^T (K, N) copy": ([w.t().contiguous() for w in ws], lambda x, w: x @ w),
            }
            if onednn_linear_works(dtype):  # oneDNN's bf16 linear needs AVX-512 or AVX-NE-CONVERT
                kernels["oneDNN on (N, K)"] = (ws, lambda x, w: lp(x, w, None, "none", [], ""))
                kernels["oneDNN packed"] = (
                    [torch.ops.mkldnn._reorder_linear_weight(w, 16) for w in ws],
                    lambda x, w: lp(x, w, None, "none", [], ""),
                )
            for m in (1, 16, 128):
                xs = {k: torch.randn(m, k, generator=g).to(dtype) for k, _ in shapes}
                times = {}
                for name, (weights, f) in kernels.items():

                    def step(weights=weights, f=f, xs=xs, shapes=shapes):
                        for (k, _), w in zip(shapes, weights, strict=True):
                            f(xs[k], w)

                    times[name] = _best(step, args.repeats)
                base = times["F.linear (N, K)"]
                for name, t in times.items():
                    rows.append(
                        {
                            "model": f"{model} ({mib:.0f} MiB fp32)",
                            "dtype": str(dtype)[6:],
                            "rows": m,
                            "kernel": name,
                            "ms": 1000 * t,
                            "x": base / t,
                        }
                    )
    return rows


def _attention_variants(B: int, H: int, K: int, S: int, D: int, g: torch.Generator) -> dict:
    """One decode query against an S-token cache: SDPA in fp32 and bf16, and bf16 as two matmuls."""
    q32 = torch.randn(B, H, 1, D, generator=g)
    k32, v32 = torch.randn(B, K, S, D, generator=g), torch.randn(B, K, S, D, generator=g)
    q16, k16, v16 = q32.bfloat16(), k32.bfloat16(), v32.bfloat16()

    def two_matmuls():
        scores = q16.reshape(B, K, H // K, D) @ k16.transpose(-1, -2) * D**-0.5  # (B, K, H/K, S)
        return (torch.softmax(scores, -1, dtype=torch.float32).to(torch.bfloat16) @ v16).view(B, H, 1, D)

    return {
        "SDPA fp32 (fp32 cache)": lambda: F.scaled_dot_product_attention(q32, k32, v32, enable_gqa=True),
        "SDPA bf16": lambda: F.scaled_dot_product_attention(q16, k16, v16, enable_gqa=True),
        "two matmuls bf16": two_matmuls,
    }


@torch.inference_mode()
def bench_attention(args) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for B, H, K, S, D in [(1, 4, 2, 256, 64), (16, 4, 2, 256, 64), (1, 12, 4, 256, 64), (16, 12, 4, 256, 64)]:
        variants = _attention_variants(B, H, K, S, D, g)
        times = {name: _best(lambda f=f: [f() for _ in range(20)], args.repeats) / 20 for name, f in variants.items()}
        base = times["SDPA fp32 (fp32 cache)"]
        for name, t in times.items():
            rows.append({"shape": f"B={B} H={H} K={K} S={S} D={D}", "variant": name, "us": 1e6 * t, "x": t / base})
    return rows


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n"
    return head + "".join("| " + " | ".join(format(r[c[0]], c[2]) for c in cols) + " |\n" for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="matmul,attention")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    only = set(args.only.split(","))
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}\n"
    )
    if "matmul" in only:
        print("### Matmuls of one decode step (x = speed-up over F.linear in the same dtype)\n")
        print(
            table(
                bench_matmul(args),
                [
                    ("model", "weights", ""),
                    ("dtype", "dtype", ""),
                    ("rows", "rows", "d"),
                    ("kernel", "kernel", ""),
                    ("ms", "ms per step", ".2f"),
                    ("x", "x", ".2f"),
                ],
            )
        )
    if "attention" in only:
        print("### Decode attention (one query per row; x = time relative to SDPA fp32)\n")
        print(
            table(
                bench_attention(args),
                [("shape", "shape", ""), ("variant", "variant", ""), ("us", "us per call", ".0f"), ("x", "x", ".2f")],
            )
        )


if __name__ == "__main__":
    main()
