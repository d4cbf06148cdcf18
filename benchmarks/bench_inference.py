"""Inference: llmkit's engine vs ``transformers.generate`` on the same weights, in one script.

Sections (``--only`` picks some; all by default):

* ``speed``  batch-1 decode tok/s, prefill tok/s, time to first token, batch-16 throughput, for a
  cpu-tiny-shaped random model and a ~100M-parameter random model. Greedy, EOS ignored, each
  library in each of ``--dtypes`` (fp32 and bf16 by default); llmkit loads as the CLI does
  (inference-only: packed weights held once). All runners are timed alternately in one process;
  each number is the best of ``--repeats`` runs (the least disturbed by other processes).
* ``memory`` resident memory of a child process per (model, library, dtype): the peak while loading,
  the RSS after loading, and the peak during the batch-16 generation (the peak mark is reset in
  between, so loading does not count); "added by generation" is the difference.
* ``prefix`` time to first token of a chat turn (history + reply + a new message) with the
  engine's prefix cache (only the new message is prefilled) and without it.
* ``speculative`` (needs ``--checkpoint``, a trained model): plain greedy vs speculative greedy with
  prompt lookup and with a small draft (``--draft CKPT``, or the checkpoint's own first layers),
  on prompts taken from the run's validation text; speedup, acceptance rate, tokens per target pass.
* ``rope`` (needs ``--checkpoint``): perplexity on validation text at 1x, 2x and 4x the trained
  context, with no scaling and with each RoPE scaling method (factor = length / trained length).

    python benchmarks/bench_inference.py --checkpoint runs/cpu-tiny/base

Prints markdown tables (the record lives in docs/BENCHMARKS.md). Never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MODELS = {
    # the cpu-tiny preset's shape (context raised so 128 + 128 tokens fit comfortably)
    "cpu-tiny": dict(
        vocab_size=4096,
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ),
    "100M": dict(
        vocab_size=32000,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=512,
    ),
}


def make_checkpoint(name: str, root: Path) -> Path:
    from llmkit.checkpoint import save_checkpoint
    from llmkit.config import ModelConfig
    from llmkit.model.transformer import Transformer

    path = root / name
    if not (path / "config.json").is_file():
        torch.manual_seed(0)
        save_checkpoint(path, Transformer(ModelConfig(**MODELS[name])))
    return path


class Runner:
    """``run(prompts, n) -> seconds`` for one library on one checkpoint (greedy, exactly n tokens)."""

    def __init__(self, lib: str, ckpt: Path, dtype: torch.dtype):
        self.lib = lib
        self.dtype = dtype
        self.label = f"{lib} {str(dtype).removeprefix('torch.')}"
        if lib == "llmkit":
            from llmkit.checkpoint import load_model
            from llmkit.infer.engine import Engine
            from llmkit.model.inference import prepare_for_inference

            model = load_model(ckpt, dtype=dtype)
            prepare_for_inference(model, release_dense=True)  # what llmkit.load(..., inference_only=True) does
            self.engine = Engine(model, max_batch=64)
        else:
            import transformers

            transformers.logging.set_verbosity_error()
            self.model = transformers.AutoModelForCausalLM.from_pretrained(ckpt, dtype=dtype).eval()
            self.transformers = transformers

    @torch.inference_mode()
    def run(self, prompts: list[list[int]], n: int) -> float:
        t0 = time.perf_counter()
        if self.lib == "llmkit":
            from llmkit.infer.sampling import SamplingParams

            out = self.engine.generate(prompts, SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True))
            lengths = {len(c[0].token_ids) for c in out}
        else:
            gc = self.transformers.GenerationConfig(
                do_sample=False, max_new_tokens=n, eos_token_id=None, pad_token_id=0
            )
            ids = torch.tensor(prompts)  # equal lengths: no padding needed
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gc)
            lengths = {out.shape[1] - ids.shape[1]}
        dt = time.perf_counter() - t0
        assert lengths == {n}, (self.lib, lengths)
        return dt


def bench_speed(args, root: Path) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for name in args.models:
        ckpt = make_checkpoint(name, root)
        V = MODELS[name]["vocab_size"]
        one = [torch.randint(16, V, (args.prompt_len,), generator=g).tolist()]
        batch = [torch.randint(16, V, (args.prompt_len,), generator=g).tolist() for _ in range(args.batch)]
        runners = [Runner(lib, ckpt, dt) for dt in args.torch_dtypes for lib in ("llmkit", "transformers")]
        best = {r.label: {"ttft": math.inf, "gen": math.inf, "batch": math.inf} for r in runners}
        for r in runners:  # warm up (first-call allocations, kernel selection)
            r.run(one, 4)
            r.run(batch[:2], 2)
        for _ in range(args.repeats):
            for r in runners:  # alternate, so all see the same machine conditions
                b = best[r.label]
                b["ttft"] = min(b["ttft"], r.run(one, 1))
                b["gen"] = min(b["gen"], r.run(one, args.new_tokens))
                b["batch"] = min(b["batch"], r.run(batch, args.new_tokens))
        for r in runners:
            b = best[r.label]
            rows.append(
                {
                    "model": name,
                    "lib": r.lib,
                    "dtype": str(r.dtype).removeprefix("torch."),
                    "ttft_ms": 1000 * b["ttft"],
                    "prefill_tok_s": args.prompt_len / b["ttft"],
                    "decode_tok_s": (args.new_tokens - 1) / max(b["gen"] - b["ttft"], 1e-9),
                    "batch_tok_s": args.batch * args.new_tokens / b["batch"],
                }
            )
        print(f"  measured {name}", file=sys.stderr)
    return rows


def _child_memory(lib: str, ckpt: str, batch: int, prompt_len: int, new_tokens: int, dtype: str) -> None:
    """Run in a fresh process: print RSS after loading (and one warm-up token) and the peak RSS
    of the generation itself (VmHWM after resetting it through /proc/self/clear_refs, so the
    loading peak does not count) in MiB."""

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    r = Runner(lib, Path(ckpt), getattr(torch, dtype))
    V = json.loads((Path(ckpt) / "config.json").read_text())["vocab_size"]
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(16, V, (prompt_len,), generator=g).tolist() for _ in range(batch)]
    r.run(prompts[:1], 1)  # touch every weight (safetensors pages are mapped lazily)
    loaded = status("VmRSS")
    load_peak = status("VmHWM")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark
    r.run(prompts, new_tokens)
    print(json.dumps({"loaded_mib": loaded, "load_peak_mib": load_peak, "peak_mib": status("VmHWM")}))


def bench_memory(args, root: Path) -> list[dict]:
    rows = []
    for name in args.models:
        ckpt = make_checkpoint(name, root)
        for dtype in args.dtypes:
            for lib in ("llmkit", "transformers"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child-memory",
                        lib,
                        str(ckpt),
                        str(args.batch),
                        str(args.prompt_len),
                        str(args.new_tokens),
                        dtype,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                m = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(
                    {"model": name, "lib": lib, "dtype": dtype, **m, "gen_mib": m["peak_mib"] - m["loaded_mib"]}
                )
    return rows


@torch.inference_mode()
def bench_prefix(args, root: Path) -> list[dict]:
    """Time to first token of a chat turn (history + reply + a new message) with and without the
    prefix cache: the cache prefills only the new message."""
    from llmkit.checkpoint import load_model
    from llmkit.infer.engine import Engine
    from llmkit.infer.sampling import SamplingParams
    from llmkit.model.inference import prepare_for_inference

    rows = []
    g = torch.Generator().manual_seed(0)
    for name in args.models:
        model = load_model(make_checkpoint(name, root), dtype=args.torch_dtypes[-1])
        prepare_for_inference(model, release_dense=True)
        V = MODELS[name]["vocab_size"]
        history = torch.randint(16, V, (args.history,), generator=g).tolist()
        reply = SamplingParams(max_new_tokens=args.new_tokens // 4, temperature=0, ignore_eos=True)
        first = SamplingParams(max_new_tokens=1, temperature=0, ignore_eos=True)
        best = {"cache": math.inf, "no cache": math.inf}
        for _ in range(args.repeats + 1):  # the first round warms up
            for label in best:
                eng = Engine(model, prefix_cache=1 if label == "cache" else 0)
                out = eng.generate([history], reply)[0][0].token_ids
                turn = history + out + torch.randint(16, V, (args.message,), generator=g).tolist()
                t = time.perf_counter()
                eng.generate([turn], first)
                best[label] = min(best[label], time.perf_counter() - t)
        rows.append(
            {
                "model": name,
                "dtype": str(args.torch_dtypes[-1]).removeprefix("torch."),
                "turn": f"{args.history} + {len(out)} + {args.message}",
                "no_cache_ms": 1000 * best["no cache"],
                "cache_ms": 1000 * best["cache"],
                "x": best["no cache"] / best["cache"],
            }
        )
    return rows


def _val_tokens(ckpt: Path, n: int) -> torch.Tensor:
    """``n`` validation tokens of the run the checkpoint belongs to (runs/<name>/data/val)."""
    from llmkit.data.shards import TokenShards

    for d in (ckpt.parent / "data" / "val", ckpt.parent / "data" / "train"):
        if (d / "index.json").is_file():
            shards = TokenShards(d)
            take = min(n, len(shards))
            return torch.from_numpy(shards.window(0, take))
    raise SystemExit(f"{ckpt.parent / 'data'}: no token shards next to the checkpoint")


def _truncated_draft(model, layers: int):
    """The target's first ``layers`` blocks + its norm and head: a small draft with the same vocabulary."""
    import copy

    draft = copy.deepcopy(model)
    draft.model.layers = draft.model.layers[:layers]
    draft.config = copy.copy(model.config)
    draft.config.num_hidden_layers = layers
    return draft.eval()


def bench_speculative(args) -> list[dict]:
    import llmkit
    from llmkit.infer.sampling import SamplingParams
    from llmkit.infer.speculative import SpeculativeDecoder

    ckpt = Path(args.checkpoint)
    lm = llmkit.load(ckpt, device="cpu")
    eng = lm.engine
    ctx = eng.context
    plen, n = min(64, ctx // 4), min(args.new_tokens, ctx // 2)
    toks = _val_tokens(ckpt, 40 * plen)
    prompts = [toks[i * plen : (i + 1) * plen].tolist() for i in range(8)]
    # copy-heavy prompts (the text repeated) are where prompt lookup shines
    copy_prompts = [(p[: plen // 2] * 2)[:plen] for p in prompts]
    params = SamplingParams(temperature=0, max_new_tokens=n)
    drafts = {"prompt lookup": dict(prompt_lookup=True)}
    L = lm.config.num_hidden_layers
    if args.draft:
        drafts[f"draft {Path(args.draft).parent.name}/{Path(args.draft).name}"] = dict(
            draft_model=llmkit.load(args.draft, device="cpu").model
        )
    else:
        drafts[f"draft: first {max(1, L // 3)} of {L} layers"] = dict(
            draft_model=_truncated_draft(lm.model, max(1, L // 3))
        )
    rows = []
    for label, ps in (("validation text", prompts), ("repetitive text", copy_prompts)):
        t0 = time.perf_counter()
        plain = [eng.generate([p], params)[0][0].token_ids for p in ps]
        t_plain = time.perf_counter() - t0
        for name, kw in drafts.items():
            for k in (2, 4):
                spec = SpeculativeDecoder(
                    eng, kw.get("draft_model"), prompt_lookup=kw.get("prompt_lookup", False), num_draft_tokens=k
                )
                t0 = time.perf_counter()
                outs = [spec.generate(p, params).token_ids for p in ps]
                t = time.perf_counter() - t0
                assert outs == plain, "speculative greedy must equal plain greedy"
                rows.append(
                    {
                        "prompts": label,
                        "method": name,
                        "k": k,
                        "speedup": t_plain / t,
                        "acceptance": spec.stats.acceptance_rate,
                        "tokens_per_pass": spec.stats.tokens_per_forward,
                        "plain_tok_s": sum(map(len, plain)) / t_plain,
                        "spec_tok_s": sum(map(len, outs)) / t,
                    }
                )
    return rows


@torch.inference_mode()
def bench_rope(args) -> list[dict]:
    import llmkit
    from llmkit.model.rope import set_rope_scaling

    ckpt = Path(args.checkpoint)
    lm = llmkit.load(ckpt, device="cpu")
    trained = lm.config.max_position_embeddings
    budget = args.rope_tokens
    toks = _val_tokens(ckpt, max(budget, 4 * trained + 1))
    rows = []
    for mult in (1, 2, 4):
        L = trained * mult
        windows = [toks[i : i + L + 1] for i in range(0, len(toks) - L - 1, L)][: max(1, budget // L)]
        for method in ("none", "linear", "dynamic", "yarn"):
            if mult == 1 and method != "none":
                continue
            set_rope_scaling(lm.model, None if method == "none" else {"rope_type": method, "factor": float(mult)})
            nll, nll_far, count, count_far = 0.0, 0.0, 0, 0
            for w in windows:
                logits = lm.model(w[None, :-1]).float()[0]  # (L, V)
                losses = torch.nn.functional.cross_entropy(logits, w[1:], reduction="none")  # (L,)
                nll += losses.sum().item()
                count += L
                nll_far += losses[trained:].sum().item()
                count_far += max(0, L - trained)
            rows.append(
                {
                    "context": f"{mult}x ({L})",
                    "method": method,
                    "ppl": math.exp(nll / count),
                    "ppl_beyond": math.exp(nll_far / count_far) if count_far else float("nan"),
                    "windows": len(windows),
                }
            )
    set_rope_scaling(lm.model, None)
    return rows


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n"
    body = "".join(
        "| " + " | ".join(format(r[c[0]], c[2]) if c[2] else str(r[c[0]]) for c in cols) + " |\n" for r in rows
    )
    return head + body


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-memory":
        lib, ckpt, b, p, n, dt = sys.argv[2:8]
        _child_memory(lib, ckpt, int(b), int(p), int(n), dt)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="speed,memory,prefix,speculative,rope")
    ap.add_argument("--models", default="cpu-tiny,100M")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--dtypes",
        default="float32,bfloat16",
        help="comma-separated; each library runs in each dtype (float32, bfloat16)",
    )
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint (speculative, rope sections)")
    ap.add_argument("--draft", default=None, help="a smaller checkpoint with the same tokenizer")
    ap.add_argument("--rope-tokens", type=int, default=8192, help="tokens scored per (length, method)")
    ap.add_argument("--workdir", default=None, help="where the random checkpoints are written (default: temp)")
    ap.add_argument("--history", type=int, default=400, help="prefix section: tokens of conversation so far")
    ap.add_argument("--message", type=int, default=20, help="prefix section: tokens of the new message")
    args = ap.parse_args()
    args.models = args.models.split(",")
    args.dtypes = args.dtypes.split(",")
    args.torch_dtypes = [getattr(torch, d) for d in args.dtypes]
    only = set(args.only.split(","))
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-inference-"))
    import transformers

    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, transformers {transformers.__version__}\n"
    )
    if "speed" in only:
        rows = bench_speed(args, root)
        by = {(r["model"], r["lib"], r["dtype"]): r for r in rows}
        for r in rows:  # "x": against transformers in the same dtype
            ref = by[(r["model"], "transformers", r["dtype"])]
            r["x_decode"] = r["decode_tok_s"] / ref["decode_tok_s"]
            r["x_batch"] = r["batch_tok_s"] / ref["batch_tok_s"]
            r["x_ttft"] = ref["ttft_ms"] / r["ttft_ms"]
        print(
            f"### Speed (prompt {args.prompt_len} tokens, {args.new_tokens} new tokens, greedy, "
            f"batch {args.batch} for throughput; best of {args.repeats}; x = vs transformers in the same dtype)\n"
        )
        print(
            table(
                rows,
                [
                    ("model", "model", ""),
                    ("lib", "library", ""),
                    ("dtype", "dtype", ""),
                    ("decode_tok_s", "batch-1 decode tok/s", ".0f"),
                    ("x_decode", "x", ".2f"),
                    ("prefill_tok_s", "prefill tok/s", ".0f"),
                    ("ttft_ms", "time to first token ms", ".1f"),
                    ("x_ttft", "x", ".2f"),
                    ("batch_tok_s", f"batch-{args.batch} tok/s", ".0f"),
                    ("x_batch", "x", ".2f"),
                ],
            )
        )
        fp32 = {r["model"]: r for r in rows if r["lib"] == "transformers" and r["dtype"] == "float32"}
        mine = [r for r in rows if r["lib"] == "llmkit" and r["dtype"] != "float32" and r["model"] in fp32]
        if mine:
            print("llmkit in reduced precision vs transformers' default (float32):\n")
            for r in mine:
                ref = fp32[r["model"]]
                print(
                    f"- {r['model']} llmkit {r['dtype']}: "
                    f"batch-1 decode {r['decode_tok_s'] / ref['decode_tok_s']:.2f}x, "
                    f"time to first token {ref['ttft_ms'] / r['ttft_ms']:.2f}x, "
                    f"batch-{args.batch} {r['batch_tok_s'] / ref['batch_tok_s']:.2f}x"
                )
            print()
    if "memory" in only:
        rows = bench_memory(args, root)
        print(f"### Peak memory (batch {args.batch}, {args.prompt_len} + {args.new_tokens} tokens)\n")
        print(
            table(
                rows,
                [
                    ("model", "model", ""),
                    ("lib", "library", ""),
                    ("dtype", "dtype", ""),
                    ("load_peak_mib", "peak while loading MiB", ".0f"),
                    ("loaded_mib", "RSS after load MiB", ".0f"),
                    ("peak_mib", "peak while generating MiB", ".0f"),
                    ("gen_mib", "added by generation MiB", ".0f"),
                ],
            )
        )
    if "prefix" in only:
        rows = bench_prefix(args, root)
        print(
            f"### Chat turn: time to first token with the prefix cache ({rows[0]['dtype']}; history + reply + "
            f"new message tokens; best of {args.repeats})\n"
        )
        print(
            table(
                rows,
                [
                    ("model", "model", ""),
                    ("turn", "tokens", ""),
                    ("no_cache_ms", "full prefill ms", ".1f"),
                    ("cache_ms", "prefix cache ms", ".1f"),
                    ("x", "x", ".2f"),
                ],
            )
        )
    if "speculative" in only and args.checkpoint:
        rows = bench_speculative(args)
        print(f"### Speculative decoding (greedy; {args.checkpoint}; output identical to plain greedy)\n")
        print(
            table(
                rows,
                [
                    ("prompts", "prompts", ""),
                    ("method", "proposer", ""),
                    ("k", "k", ""),
                    ("acceptance", "acceptance", ".2f"),
                    ("tokens_per_pass", "tokens / target pass", ".2f"),
                    ("plain_tok_s", "plain tok/s", ".0f"),
                    ("spec_tok_s", "speculative tok/s", ".0f"),
                    ("speedup", "speedup", ".2f"),
                ],
            )
        )
    if "rope" in only and args.checkpoint:
        rows = bench_rope(args)
        print(f"### Perplexity past the trained context ({args.checkpoint})\n")
        print(
            table(
                rows,
                [
                    ("context", "context", ""),
                    ("method", "RoPE scaling", ""),
                    ("ppl", "perplexity", ".2f"),
                    ("ppl_beyond", "ppl of positions past trained length", ".2f"),
                    ("windows", "windows", ""),
                ],
            )
        )


if __name__ == "__main__":
    main()
