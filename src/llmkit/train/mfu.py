"""Model FLOPs utilisation against the machine's *measured* matmul peak.

Vendor peaks mean little on a laptop CPU, so the denominator is measured here: the best
throughput of square matmuls in the training dtype on the training device.
"""

from __future__ import annotations

import time
from functools import cache

import torch


@cache
def measure_peak_flops(
    device: str = "cpu", dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 0.5
) -> float:
    """Best observed FLOP/s of an (n, n) @ (n, n) matmul over about ``seconds``."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    a @ b
    sync()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:  # one matmul per timing: a dtype this CPU emulates (bf16
        t = time.perf_counter()  # without AVX512-BF16, ~1 GFLOP/s) overshoots the budget by one call only
        a @ b
        sync()
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best
