"""Quantization: kernels per shape, then size, quality and decode speed per scheme, beside llama.cpp.

Sections (``--only`` picks some; both by default):

* ``kernels``  one matmul ``x (M, K) @ W.T`` for every projection shape of the two models below
  (q/k/v fused, o, gate/up fused, down, head) at M = 1 and 16 rows: PyTorch's packed fp32 oneDNN
  matmul (the engine's fp32 path, the peer) against each int8/int4 kernel of
  ``llmkit.quant.kernels`` and torchao's weight-only int8/int4 (when torchao is installed).
* ``models``  for the trained default model (``--checkpoint``, e.g. ``runs/cpu-tiny/base``) and a
  ~100M-parameter model of the same tokenizer (random weights: size and speed only): bytes on
  disk, held-out bits per byte (delta against fp32) and batch-1 / batch-16 greedy decode tok/s for
  fp32, bf16, int8, int4 and int4-calibrated (GPTQ) through llmkit's engine, and llama.cpp
  (llama-cpp-python, same threads) on f32, q8_0 and q4_0 GGUFs exported from the same weights.

Every number is the best of ``--repeats`` runs, runners alternating, in one process.

    python benchmarks/bench_quant.py --checkpoint runs/cpu-tiny/base

Prints markdown tables (the record lives in docs/BENCHMARKS.md). Never run by the tests.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

import llmkit
from llmkit.checkpoint import save_checkpoint
from llmkit.config import ModelConfig, resolve
from llmkit.data.splits import SplitCorpus
from llmkit.export.gguf import export_gguf
from llmkit.infer.scoring import bits_per_byte
from llmkit.model.transformer import Transformer
from llmkit.quant.formats import int4_scales, int8_scales, quantize_with
from llmkit.quant.kernels import KERNELS
from llmkit.quant.model import quantize_checkpoint
from llmkit.tokenizer import Tokenizer

BIG = dict(hidden_size=768, num_hidden_layers=16, num_attention_heads=12, num_key_value_heads=4)
"""The ~100M model: cpu-tiny's tokenizer, 768 wide, 16 layers (104M parameters with a 4096 vocabulary)."""


def best_time(fn, repeats: int, inner: int = 1) -> float:
    fn()  # warm up (kernel state, caches)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t) / inner)
    return best


# ---------------------------------------------------------------------- kernels
def shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    C, D = cfg.hidden_size, cfg.head_dim
    qkv = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * D
    return {
        "qkv": (qkv, C),
        "o": (C, cfg.num_attention_heads * D),
        "gate_up": (2 * cfg.intermediate_size, C),
        "down": (C, cfg.intermediate_size),
        "head": (cfg.vocab_size, C),
    }


def torchao_runner(w: torch.Tensor, scheme: str, group: int):
    """torchao's weight-only quantized linear on ``w``, or None (not installed / not on this CPU)."""
    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError:
        return None
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data = w.clone()
    try:
        if scheme == "int8":
            quantize_(lin, Int8WeightOnlyConfig())
            dtype = torch.float32
        else:
            lin = lin.to(torch.bfloat16)
            quantize_(lin, Int4WeightOnlyConfig(group_size=group, int4_packing_format="opaque"))
            dtype = torch.bfloat16
        lin(torch.randn(1, w.shape[1], dtype=dtype))
    except Exception as e:  # an unsupported layout on this CPU, a version mismatch
        print(f"  torchao {scheme}: unavailable ({type(e).__name__}: {str(e)[:80]})")
        return None
    return lambda x: lin(x.to(dtype))


@torch.inference_mode()
def bench_kernels(configs: dict[str, ModelConfig], repeats: int, group: int) -> None:
    print("\n### Kernels: speedup over fp32 (packed oneDNN), higher is better\n")
    names = ["int8-pack", "dequant int8", "torchao int8", "int4-pack", "int4-dyn", "dequant int4", "torchao int4"]
    print("| model | matrix (N x K) | rows | fp32 us | " + " | ".join(names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    g = torch.Generator().manual_seed(0)
    for model, cfg in configs.items():
        for label, (N, K) in shapes(cfg).items():
            w = torch.randn(N, K, generator=g) * 0.02
            packed = torch.ops.mkldnn._reorder_linear_weight(w, 16)
            s8, s4 = int8_scales(w), int4_scales(w, group)
            q8, q4 = quantize_with(w, s8), quantize_with(w, s4)
            states = {
                "int8-pack": (KERNELS["int8-pack"], q8, s8),
                "dequant int8": (KERNELS["dequant"], q8, s8),
                "int4-pack": (KERNELS["int4-pack"], q4, s4),
                "int4-dyn": (KERNELS["int4-dyn"], q4, s4),
                "dequant int4": (KERNELS["dequant"], q4, s4),
            }
            prepared = {name: (k, k.prepare(q, s, None)) for name, (k, q, s) in states.items()}
            runners = {name: (lambda x, k=k, st=st: k.run(x, st)) for name, (k, st) in prepared.items()}
            runners["torchao int8"] = torchao_runner(w, "int8", group)
            runners["torchao int4"] = torchao_runner(w, "int4", group)
            for M in (1, 16):
                x = torch.randn(M, K, generator=g)
                inner = 200 if N * K < 4e6 else 40
                fp32 = best_time(
                    lambda x=x, packed=packed: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""),
                    repeats,
                    inner,
                )
                cells = []
                for name in names:
                    run = runners[name]
                    if run is None:
                        cells.append("n/a")
                        continue
                    t = best_time(lambda run=run, x=x: run(x), repeats, inner)
                    cells.append(f"{fp32 / t:.2f}x")
                print(f"| {model} | {label} {N}x{K} | {M} | {fp32 * 1e6:.0f} | " + " | ".join(cells) + " |", flush=True)


# ---------------------------------------------------------------------- models
def llmkit_decoder(path: Path, dtype: str | None):
    lm = llmkit.load(path, device="cpu", dtype=dtype, inference_only=True)
    return lm


def decode_tok_s(lm, batch: int, new_tokens: int, repeats: int) -> float:
    prompts = [[lm.tokenizer.bos_id or 0, 5 + i, 9 + i, 11] for i in range(batch)]
    params = dict(max_new_tokens=new_tokens, temperature=0, ignore_eos=True)

    def run():
        lm.engine.generate(prompts, llmkit_params(**params))

    return batch * new_tokens / best_time(run, repeats)


def llmkit_params(**kw):
    from llmkit.infer.sampling import SamplingParams

    return SamplingParams(**kw)


def llama_cpp_model(path: Path, n_ctx: int):
    from llama_cpp import Llama

    return Llama(str(path), n_ctx=n_ctx, n_threads=torch.get_num_threads(), verbose=False, logits_all=False)


def llama_cpp_tok_s(llm, bos: int, new_tokens: int, repeats: int) -> float:
    def run():
        llm.reset()
        for i, _tok in enumerate(llm.generate([bos, 5, 9, 11], top_k=1, temp=0.0, reset=True)):
            if i + 1 >= new_tokens:
                break

    return new_tokens / best_time(run, repeats)


def llama_cpp_bpb(path: Path, tok: Tokenizer, texts: list[str], max_tokens: int, n_ctx: int) -> float:
    """Bits per byte under llama.cpp, windows and separators exactly as ``scoring.bits_per_byte``."""
    import math

    import numpy as np
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=n_ctx, n_threads=torch.get_num_threads(), verbose=False, logits_all=True)
    sep, start = tok.eos_id, tok.bos_id if tok.bos_id is not None else tok.eos_id
    ids: list[int] = []
    for text in texts:
        ids += [*tok.encode(text), sep]
        if len(ids) >= max_tokens:
            break
    ids = ids[:max_tokens]
    width = n_ctx - 1
    nats = 0.0
    for i in range(0, len(ids), width):
        window = ids[i : i + width]
        llm.reset()
        llm.eval([start, *window[:-1]])
        logits = np.array(llm.scores[: len(window)], dtype=np.float64)  # (n, V)
        logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        nats -= float((logits[np.arange(len(window)), window] - logz).sum())
    nbytes = int(tok.token_bytes()[torch.tensor(ids)].sum())
    return nats / math.log(2) / nbytes


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else list(path.glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) / 1e6


def bench_model(name: str, base: Path, work: Path, val: list[str] | None, calib: str | None, args) -> None:
    tok = Tokenizer.load(base)
    ctx = llmkit.load(base, device="cpu").config.max_position_embeddings
    variants: dict[str, tuple[Path, str | None]] = {"fp32": (base, "float32"), "bf16": (base, "bfloat16")}
    schemes = [("int8", "int8", "rtn"), ("int4", "int4", "rtn")]
    if val:  # GPTQ changes which codes are stored, not their format: with random weights it adds nothing
        schemes.append(("int4-gptq", "int4", "gptq"))
    for label, scheme, method in schemes:
        out = work / f"{name}-{label}"
        quantize_checkpoint(base, out, scheme, args.group_size, method, calibration=calib, force=True)
        variants[label] = (out, None)
    ggufs = {}
    for kind in ("f32", "q8_0", "q4_0"):
        ggufs[kind] = work / f"{name}-{kind}" / "model.gguf"
        export_gguf(base, ggufs[kind], kind, force=True)

    rows = {}
    for label, (path, dtype) in variants.items():
        lm = llmkit_decoder(path, dtype)
        bpb = bits_per_byte(lm.model, tok, val, max_tokens=args.bpb_tokens) if val else None
        rows[label] = {"size": size_mb(path) if dtype != "bfloat16" else size_mb(path) / 2, "bpb": bpb, "lm": lm}
    for kind, path in ggufs.items():
        bpb = llama_cpp_bpb(path, tok, val, args.bpb_tokens, ctx) if val else None
        rows[f"llama.cpp {kind}"] = {"size": size_mb(path), "bpb": bpb, "llm": llama_cpp_model(path, ctx)}
    # decode speed: runners alternate within each repeat round
    for r in rows.values():
        r["b1"], r["b16"] = 0.0, None
    for _ in range(args.repeats):
        for r in rows.values():
            if "lm" in r:
                r["b1"] = max(r["b1"], decode_tok_s(r["lm"], 1, args.new_tokens, 1))
                r["b16"] = max(r["b16"] or 0.0, decode_tok_s(r["lm"], 16, args.new_tokens, 1))
            else:
                r["b1"] = max(r["b1"], llama_cpp_tok_s(r["llm"], tok.bos_id or 0, args.new_tokens, 1))

    fp32 = rows["fp32"]
    n = llmkit.load(base, device="cpu").model.num_params()
    print(f"\n### {name} ({n / 1e6:.1f}M parameters{', trained' if val else ', random weights'})\n")
    print("| weights | size MB | vs fp32 | held-out bpb | delta | batch-1 tok/s | vs fp32 | batch-16 tok/s | vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        bpb = f"{r['bpb']:.4f}" if r["bpb"] is not None else "—"
        delta = f"{(r['bpb'] / fp32['bpb'] - 1) * 100:+.2f}%" if r["bpb"] is not None else "—"
        b16 = f"{r['b16']:.0f} | {r['b16'] / fp32['b16']:.2f}x" if r["b16"] else "— | —"
        print(
            f"| {label} | {r['size']:.2f} | {r['size'] / fp32['size']:.0%} | {bpb} | {delta} | "
            f"{r['b1']:.0f} | {r['b1'] / fp32['b1']:.2f}x | {b16} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="trained default model (runs/cpu-tiny/base)")
    ap.add_argument("--only", default="kernels,models", help="sections: kernels, models")
    ap.add_argument("--models", default="default,100M", help="which models (default, 100M)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens decoded per timed generation")
    ap.add_argument("--bpb-tokens", type=int, default=16384, help="held-out tokens scored for bits/byte")
    args = ap.parse_args()
    torch.manual_seed(0)
    run_dir = args.checkpoint.resolve().parent
    cfg = resolve(base=__import__("yaml").safe_load((run_dir / "config.yaml").read_text()))
    val = [d for docs in SplitCorpus(cfg.data, cfg.train.seed).val.values() for d in docs]
    base_cfg = llmkit.load(args.checkpoint, device="cpu").config
    big_cfg = ModelConfig(**{**base_cfg.__dict__, **BIG, "head_dim": 0, "intermediate_size": 0})
    tiny_cfg = resolve("cpu-tiny").model  # the default speedrun's shapes, whatever --checkpoint is
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"int4 group size {args.group_size}; {args.new_tokens} new tokens per decode"
    )
    only = args.only.split(",")
    if "kernels" in only:
        bench_kernels({"cpu-tiny": tiny_cfg, "100M": big_cfg}, args.repeats, args.group_size)
    if "models" in only:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            models = args.models.split(",")
            if "default" in models:  # calibrated on its own run's training split
                bench_model(f"{args.checkpoint} (trained)", args.checkpoint, work, val, None, args)
            if "100M" in models:
                big = work / "big"
                save_checkpoint(big, Transformer(big_cfg), Tokenizer.load(args.checkpoint))
                bench_model("~100M", big, work, None, cfg.data.sources[0], args)


if __name__ == "__main__":
    main()
