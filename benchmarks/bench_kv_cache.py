"""The int8 KV cache against the full-precision one: quality, memory and decode speed.

* **quality** on the trained default model (``--checkpoint``): held-out bits per byte with every
  attended key/value read back from the cache (windows of the model's context, each one forward
  through a cache of that kind; the int8 cache quantizes every written vector, so this is exactly
  what decoding reads), and greedy agreement: ``--prompts`` held-out prompts of 32 tokens, 64 new
  tokens each, the share of tokens equal to the fp32 cache's and of whole replies that are equal.
* **memory and speed** on a ~100M random model with a 2,048-token context (the same tokenizer):
  the cache's bytes and batch-1 / batch-4 decode tokens/s after a long prompt (the decode steps
  alone, through the engine's step API), both kinds, best of ``--repeats``, alternating.

    python benchmarks/bench_kv_cache.py --checkpoint runs/cpu-tiny/base

Prints markdown tables (the record lives in docs/BENCHMARKS.md). Never run by the tests.
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import llmkit
from llmkit.checkpoint import save_checkpoint
from llmkit.config import ModelConfig, resolve
from llmkit.data.splits import SplitCorpus
from llmkit.infer.engine import Engine
from llmkit.infer.kv_cache import KVCache
from llmkit.infer.sampling import SamplingParams
from llmkit.model.transformer import Transformer
from llmkit.tokenizer import Tokenizer

KINDS = ("auto", "int8")
BIG = dict(hidden_size=768, num_hidden_layers=16, num_attention_heads=12, num_key_value_heads=4)


@torch.inference_mode()
def cached_bits_per_byte(model, tok, ids: list[int], kind: str, batch: int = 8) -> float:
    """Bits per byte of ``ids`` in full context windows, keys/values read back from the cache."""
    L = model.config.max_position_embeddings
    windows = torch.tensor([ids[i : i + L] for i in range(0, len(ids) - L + 1, L)])  # (W, L)
    nats = 0.0
    for b in range(0, len(windows), batch):
        x = windows[b : b + batch]  # (n, L)
        cache = KVCache.for_model(model, len(x), L, kind)
        cache.bind(slice(0, len(x)), [0] * len(x), L)
        logits = model(x, kv_cache=cache)[:, :-1].float()  # (n, L-1, V)
        nats += F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum").item()
    scored = windows[:, 1:].flatten()
    nbytes = int(tok.token_bytes()[scored].sum())
    return nats / math.log(2) / nbytes


def agreement(model, tok, prompts: list[list[int]]) -> dict[str, float]:
    params = SamplingParams(temperature=0, max_new_tokens=64, ignore_eos=True)
    out = {k: [c[0].token_ids for c in Engine(model, tok, kv_cache=k).generate(prompts, params)] for k in KINDS}
    pairs = list(zip(out["auto"], out["int8"], strict=True))
    same = sum(a == b for x, y in pairs for a, b in zip(x, y, strict=True))
    first = [next((i for i, (a, b) in enumerate(zip(x, y, strict=True)) if a != b), len(x)) for x, y in pairs]
    return {
        "tokens": same / sum(len(x) for x, _ in pairs),
        "replies": sum(x == y for x, y in pairs) / len(pairs),
        "first_diff": sum(first) / len(pairs),
    }


def decode_speed(model, prompt_len: int, batch: int, new_tokens: int, repeats: int) -> dict[str, tuple[float, int]]:
    """Decode tok/s after a ``prompt_len`` prompt and the cache's bytes, per kind: the engine's
    step API prefills every prompt in the first step, and only the steps after it are timed."""
    torch.manual_seed(0)
    prompts = torch.randint(3, model.config.vocab_size, (batch, prompt_len)).tolist()
    params = SamplingParams(temperature=0, max_new_tokens=new_tokens, ignore_eos=True)
    engines = {k: Engine(model, kv_cache=k, max_batch=batch) for k in KINDS}
    best = dict.fromkeys(KINDS, 0.0)
    for _ in range(repeats):
        for k, eng in engines.items():
            ids = [i for p in prompts for i in eng.add(p, params)]
            eng.step()  # prefill and the first token of every row
            t, steps = time.perf_counter(), 0
            while eng.has_work():
                eng.step()
                steps += 1
            best[k] = max(best[k], batch * steps / (time.perf_counter() - t))
            for i in ids:
                eng.result(i)
    return {k: (best[k], engines[k].cache.nbytes()) for k in KINDS}


def quality(lm, tok, cfg, args) -> None:
    ids: list[int] = []
    for docs in SplitCorpus(cfg.data, cfg.train.seed).val.values():
        for d in docs:
            ids += [*tok.encode(d), tok.eos_id]
    ids = ids[: args.tokens]
    L = lm.model.config.max_position_embeddings
    print(f"\n{args.checkpoint}: {len(ids) // L * (L - 1):,} held-out tokens in windows of {L}\n")
    print("| KV cache | held-out bits/byte | delta |")
    print("|---|---|---|")
    bpb = {k: cached_bits_per_byte(lm.model, tok, ids, k) for k in KINDS}
    for k in KINDS:
        print(f"| {'fp32' if k == 'auto' else k} | {bpb[k]:.4f} | {100 * (bpb[k] / bpb['auto'] - 1):+.3f}% |")
    prompts = [ids[i : i + 32] for i in range(0, args.prompts * L, L)][: args.prompts]
    a = agreement(lm.model, tok, prompts)
    print(
        f"\ngreedy, {len(prompts)} held-out prompts x 64 new tokens: {100 * a['tokens']:.1f}% of tokens and "
        f"{100 * a['replies']:.1f}% of replies equal to the fp32 cache's; first difference at token "
        f"{a['first_diff']:.1f} on average"
    )


def speed(lm, args) -> None:
    big_cfg = ModelConfig(
        **{**lm.model.config.__dict__, **BIG, "head_dim": 0, "intermediate_size": 0, "max_position_embeddings": 2048}
    )
    with tempfile.TemporaryDirectory() as tmp:
        model = Transformer(big_cfg)
        n = sum(p.numel() for p in model.parameters())
        save_checkpoint(Path(tmp), model, Tokenizer.load(args.checkpoint))
        del model
        big = llmkit.load(tmp, device="cpu", dtype="float32", inference_only=True).model
        print(f"\n~100M random model ({n / 1e6:.0f}M parameters, context 2048), prompt {args.prompt_len} tokens,")
        print(f"{args.new_tokens} new tokens, best of {args.repeats}\n")
        print("| batch | KV cache | cache bytes | vs fp32 | decode tok/s | vs fp32 |")
        print("|---|---|---|---|---|---|")
        for batch in (1, 4):
            r = decode_speed(big, args.prompt_len, batch, args.new_tokens, args.repeats)
            for k in KINDS:
                (ts, nb), (ts0, nb0) = r[k], r["auto"]
                name = "fp32" if k == "auto" else k
                print(f"| {batch} | {name} | {nb / 2**20:,.1f} MiB | {nb / nb0:.2f}x | {ts:.1f} | {ts / ts0:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="trained default model (runs/cpu-tiny/base)")
    ap.add_argument("--tokens", type=int, default=65536, help="held-out tokens scored for bits/byte")
    ap.add_argument("--prompts", type=int, default=64, help="held-out prompts for greedy agreement")
    ap.add_argument("--prompt-len", type=int, default=1920, help="prompt tokens before the timed decode")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="quality,speed", help="sections: quality, speed")
    args = ap.parse_args()
    run_dir = args.checkpoint.resolve().parent
    cfg = resolve(base=__import__("yaml").safe_load((run_dir / "config.yaml").read_text()))
    lm = llmkit.load(args.checkpoint, device="cpu", dtype="float32", inference_only=True)
    tok = lm.tokenizer
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")

    if "quality" in args.only.split(","):
        quality(lm, tok, cfg, args)
    if "speed" in args.only.split(","):
        speed(lm, args)


if __name__ == "__main__":
    main()
