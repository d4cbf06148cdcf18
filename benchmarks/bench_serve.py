"""Serving under load: requests/s, output tokens/s, time to first token and time per output token
(p50/p90/p99) at several concurrencies, for ``llmkit serve`` and a peer server on the same weights.

The load generator is ``openai``'s async client streaming chat completions over loopback: each of
``concurrency`` workers sends its next request as soon as the previous one ends, until the level's
request count (or time limit) is reached. Every request has its own prompt (no shared prefix to
reuse) and asks for ``--max-tokens`` tokens in the standard API only (a reply may end earlier at
the model's end of turn; throughput counts the tokens actually generated, from ``usage`` or,
where a server sends none, one per streamed piece). Errors are counted, not retried; a reply the
model ends at once is a finished request, counted as an empty reply and left out of the latency
percentiles.

Peers (each started here on a free port, one at a time, same checkpoint directory):
  * ``transformers serve CKPT --continuous-batching`` (transformers' paged continuous batching);
  * ``transformers serve CKPT`` (one request at a time through ``generate``), with ``--peer transformers``;
  * ``--llama-cpp``: also llama-cpp-python's server (``python -m llama_cpp.server``, its ``server``
    extra: sse-starlette, starlette-context, pydantic-settings) on an f32 GGUF exported from the
    same weights by ``llmkit export gguf``, with the GGUF's own chat template; it serves one
    request at a time (with ``--interrupt_requests False``: by default a new request cuts off the
    one being streamed).

    python benchmarks/bench_serve.py runs/cpu-tiny/base --big /tmp/llmkit-100m
    python benchmarks/bench_serve.py CKPT --levels 1,4,16 --requests 2 --peer none   # quick look

``--big DIR`` serves a ~100M-parameter model too: random weights in llmkit's format, written to DIR
on first use (speed does not depend on what the weights learned). The machine's cores are shared
by the server and this client; the table says how many there are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LEVELS = (1, 4, 16, 64)


# --------------------------------------------------------------------- servers
class Proc:
    """A server in a child process; ``url`` once it answers /v1/models."""

    def __init__(self, argv: list[str], port: int, env: dict | None = None, timeout: float = 600):
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}
        )
        threading.Thread(target=lambda: [self.log.append(line) for line in self.proc.stdout], daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited:\n" + "".join(self.log[-30:]))
            try:
                if httpx.get(self.url + "/v1/models", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not start:\n" + "".join(self.log[-30:]))
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llmkit(ckpt: Path, max_batch: int) -> tuple[Proc, str]:
    port = free_port()
    argv = [sys.executable, "-m", "llmkit.cli", "serve", f"m={ckpt}", "--port", str(port)]
    argv += ["--max-batch", str(max_batch), "--max-queue", "1024", "--device", "cpu"]
    return Proc(argv, port), "m"


def start_transformers(ckpt: Path, continuous: bool) -> tuple[Proc, str]:
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    argv = [str(exe), "serve", str(ckpt), "--port", str(port), "--device", "cpu", "--host", "127.0.0.1"]
    argv.append("--continuous-batching" if continuous else "--no-continuous-batching")
    return Proc(argv, port, env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}), str(ckpt)


def start_llama_cpp(ckpt: Path, work: Path) -> tuple[Proc, str]:
    from llmkit.export.gguf import export_gguf

    gguf = work / f"{ckpt.name}-f32.gguf"
    if not gguf.exists():
        export_gguf(ckpt, gguf, "f32")
    ctx = json.loads((ckpt / "config.json").read_text())["max_position_embeddings"]
    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "m"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(ctx), "--n_threads", str(os.cpu_count())]
    argv += ["--interrupt_requests", "False"]  # by default a new request cuts off the one streaming
    return Proc(argv, port), "m"


# --------------------------------------------------------------------- load
PROMPT = "Write a long story about the sea, the wind and a small boat. 写一个关于大海的故事。"


async def one_request(client, model: str, i: int, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    first = last = None
    pieces = 0
    usage = None
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"({i}) {PROMPT}"}],
            max_tokens=max_tokens,
            temperature=0.8,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.perf_counter()
                first = first or now
                last = now
                pieces += 1
    except Exception as e:  # counted, not retried
        return {"error": f"{type(e).__name__}: {e}"[:200]}
    if first is None:  # the model ended its turn at once: a finished request with an empty reply
        return {"tokens": usage.completion_tokens if usage is not None else 0, "empty": True}
    tokens = usage.completion_tokens if usage is not None else pieces
    return {"ttft": first - t0, "tpot": (last - first) / max(tokens - 1, 1), "tokens": tokens}


async def run_level(url: str, model: str, concurrency: int, requests: int, max_tokens: int, time_limit: float) -> dict:
    import httpx
    import openai

    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency + 4), timeout=600)
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, http_client=http)
    queue = list(range(requests))
    results: list[dict] = []
    deadline = time.perf_counter() + time_limit

    async def worker():
        while queue and time.perf_counter() < deadline:
            i = queue.pop()
            results.append(await one_request(client, model, i, max_tokens))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await http.aclose()
    ok = [r for r in results if "error" not in r]
    timed = [r for r in ok if not r.get("empty")]
    errors = [r["error"] for r in results if "error" in r]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(errors),
        "empty": len(ok) - len(timed),
        "first_error": errors[0] if errors else "",
        "wall_s": wall,
        "req_s": len(ok) / wall,
        "tok_s": sum(r["tokens"] for r in ok) / wall,
        "ttft": _pcts([r["ttft"] for r in timed]),
        "tpot": _pcts([r["tpot"] for r in timed]),
    }


def _pcts(xs: list[float]) -> dict:
    if not xs:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    xs = sorted(xs)

    def at(q):
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]

    return {"p50": statistics.median(xs), "p90": at(0.9), "p99": at(0.99)}


# --------------------------------------------------------------------- models
def big_checkpoint(directory: Path, tokenizer_from: Path) -> Path:
    """~100M parameters (12 x 768, GQA 12/4 heads, 1024 context) with random weights, and the
    tokenizer of ``tokenizer_from``, written once."""
    if (directory / "config.json").is_file():
        return directory
    import torch

    from llmkit.checkpoint import save_checkpoint
    from llmkit.config import ModelConfig
    from llmkit.model.transformer import Transformer
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.load(tokenizer_from)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        intermediate_size=2816,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Transformer(cfg)
    n = sum(p.numel() for p in model.parameters())
    print(f"writing a {n / 1e6:.0f}M-parameter random model to {directory}", file=sys.stderr)
    save_checkpoint(directory, model, tokenizer=tok)
    return directory


def params_of(ckpt: Path) -> float:
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        names = list(f.keys())
        return sum(math.prod(f.get_slice(k).get_shape()) for k in names)


# --------------------------------------------------------------------- main
def bench_server(label: str, start, args, levels) -> list[dict]:
    try:
        proc, model = start()
    except (RuntimeError, FileNotFoundError) as e:
        print(f"{label}: could not start ({str(e).splitlines()[0]})", file=sys.stderr)
        return [{"server": label, "unavailable": str(e).splitlines()[0][:160]}]
    rows = []
    try:
        asyncio.run(run_level(proc.url, model, 2, 2, 8, 300))  # warm-up: first requests load kernels
        for c in levels:
            n = max(args.requests * c, 4)
            row = asyncio.run(run_level(proc.url, model, c, n, args.max_tokens, args.time_limit))
            row["server"] = label
            rows.append(row)
            print(
                f"  {label:<34} c={c:<3} {row['req_s']:7.2f} req/s {row['tok_s']:8.1f} tok/s "
                f"TTFT p50 {row['ttft']['p50'] * 1000:7.0f} ms  TPOT p50 {row['tpot']['p50'] * 1000:6.1f} ms  "
                f"errors {row['errors']} {row['first_error']}",
                file=sys.stderr,
            )
    finally:
        proc.stop()
    return rows


def table(model_label: str, rows: list[dict]) -> str:
    lines = [
        f"**{model_label}**",
        "",
        "| server | concurrency | requests | errors | empty replies | req/s | output tok/s "
        "| TTFT p50 / p90 / p99 (ms) | TPOT p50 / p90 / p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if "unavailable" in r:
            lines.append(f"| {r['server']} | - | - | - | - | - | - | did not start: {r['unavailable']} | |")
            continue
        t, p = r["ttft"], r["tpot"]
        lines.append(
            f"| {r['server']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['empty']} | "
            f"{r['req_s']:.2f} | {r['tok_s']:.1f} | "
            f"{t['p50'] * 1e3:.0f} / {t['p90'] * 1e3:.0f} / {t['p99'] * 1e3:.0f} | "
            f"{p['p50'] * 1e3:.1f} / {p['p90'] * 1e3:.1f} / {p['p99'] * 1e3:.1f} |"
        )
    ours = {r["concurrency"]: r for r in rows if r.get("server") == "llmkit serve" and "tok_s" in r}
    if 1 in ours and 16 in ours:
        lines += [
            "",
            f"llmkit: output tok/s at concurrency 16 / at 1 = **{ours[16]['tok_s'] / ours[1]['tok_s']:.1f}x**",
        ]
    for name in sorted({r["server"] for r in rows if r["server"] != "llmkit serve" and "tok_s" in r}):
        peer = {r["concurrency"]: r for r in rows if r["server"] == name and "tok_s" in r}
        common = sorted(c for c in set(ours) & set(peer) if peer[c]["tok_s"] > 0)
        if common:
            ratios = ", ".join(f"c={c}: {ours[c]['tok_s'] / peer[c]['tok_s']:.1f}x" for c in common)
            lines += ["", f"llmkit / {name} output tok/s: {ratios}"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="the default speedrun's model (e.g. runs/cpu-tiny/base)")
    ap.add_argument("--big", type=Path, default=None, help="also a ~100M random model, written here if absent")
    ap.add_argument(
        "--big-only", action="store_true", help="measure only the ~100M model (its tokenizer: CHECKPOINT's)"
    )
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrencies (default 1,4,16,64)")
    ap.add_argument("--requests", type=int, default=2, help="requests per level = this x concurrency (min 4)")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens asked per request")
    ap.add_argument("--time-limit", type=float, default=180, help="seconds per level before no new request starts")
    ap.add_argument("--max-batch", type=int, default=64, help="llmkit serve --max-batch")
    ap.add_argument(
        "--peer",
        default="transformers-cb",
        choices=["transformers-cb", "transformers", "none"],
        help="the peer server (transformers serve with or without continuous batching)",
    )
    ap.add_argument("--llama-cpp", action="store_true", help="also llama-cpp-python's server on an f32 GGUF")
    ap.add_argument("--json", type=Path, default=None, help="write every row here too")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    import torch

    models = [] if args.big_only else [("default speedrun model", args.checkpoint)]
    if args.big:
        models.append(("~100M random model", big_checkpoint(args.big, args.checkpoint)))
    out, everything = [], []
    for label, ckpt in models:
        label = f"{label} ({params_of(ckpt) / 1e6:.1f}M parameters, {ckpt})"
        print(label, file=sys.stderr)
        rows = bench_server("llmkit serve", lambda ckpt=ckpt: start_llmkit(ckpt, args.max_batch), args, levels)
        if args.peer != "none":
            cb = args.peer == "transformers-cb"
            name = "transformers serve --continuous-batching" if cb else "transformers serve"
            rows += bench_server(name, lambda ckpt=ckpt, cb=cb: start_transformers(ckpt, cb), args, levels)
        if args.llama_cpp:
            with tempfile.TemporaryDirectory() as tmp:
                start = lambda ckpt=ckpt, tmp=tmp: start_llama_cpp(ckpt, Path(tmp))  # noqa: E731
                rows += bench_server("llama-cpp-python server", start, args, levels)
        out.append(table(label, rows))
        everything += [{**r, "model": label} for r in rows]
    header = (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared by server and "
        f"client, torch {torch.__version__}; {args.max_tokens} tokens per request, "
        f"{args.requests} x concurrency requests per level"
    )
    print(header + "\n\n" + "\n\n".join(out))
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
