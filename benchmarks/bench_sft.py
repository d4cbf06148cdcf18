"""SFT training throughput and peak memory: llmkit against TRL's ``SFTTrainer``, full and LoRA.

Both train the same checkpoint (an llmkit checkpoint is a Hugging Face one) on the same
single-turn conversations of the task suite, rendered by the same chat template, with the loss on
the assistant reply only, packed into rows of ``--seq-len`` tokens where attention stays inside
each conversation (TRL: ``packing=True``, best-fit packing with restarted position ids, which
transformers' SDPA attention turns into a block-diagonal mask; llmkit: ``SFTTask``), ``--batch``
rows per optimizer step, AdamW, fp32, one process. Each (library, mode) runs in a fresh process:
2 warm-up steps, then ``--steps`` timed ones; tokens/s counts the real (non-pad) tokens of the
timed steps. Runs alternate llmkit/TRL and the best of ``--repeats`` is kept. Peak RSS is the
process's maximum resident set (TRL's process also holds its larger imports).

    python benchmarks/bench_sft.py                                  # random cpu-tiny-shaped model
    python benchmarks/bench_sft.py --base runs/cpu-tiny/base --steps 8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TASKS = ["add2", "sub2", "copy", "reverse", "word_problems", "upper_case"]

COMMON = r"""
import json, os, resource, sys, time, tempfile
import torch
torch.manual_seed(0)
base, data_file, mode, seq_len, batch, steps, lora_r = sys.argv[2:9]
seq_len, batch, steps, lora_r = int(seq_len), int(batch), int(steps), int(lora_r)
convs = [json.loads(x)["messages"] for x in open(data_file, encoding="utf-8")]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
"""

LLMKIT = r"""
from llmkit.checkpoint import load_model
from llmkit.config import TrainConfig
from llmkit.data.chat import ChatStats, encode_conversations, fit_length
from llmkit.tokenizer import Tokenizer
from llmkit.train.sft import SFTTask
from llmkit.train.trainer import Trainer
tok = Tokenizer.load(base)
model = load_model(base)
if lora_r:
    from llmkit.model.lora import LoraConfig, add_lora
    add_lora(model, LoraConfig(lora_r, 2.0 * lora_r, 0.0, TARGETS))
st = ChatStats()
encoded = [e for e in (fit_length(x, seq_len, "drop", st) for x in encode_conversations(tok, convs)) if e is not None]
task = SFTTask([encoded], [1.0], seq_len, batch, tok.pad_id)
cfg = TrainConfig(max_steps=steps + 2, batch_size=batch, seq_len=seq_len, optimizer="adamw", lr=1e-4,
                  warmup_steps=0, dtype="fp32", device="cpu", eval_every=0,
                  ckpt_every=10**9, log_every=10**9)
trainer = Trainer(model, task, cfg, tempfile.mkdtemp())
for _ in range(2):
    trainer.train_step()
t = time.perf_counter()
tokens = sum(trainer.train_step()["tokens"] for _ in range(steps))
dt = time.perf_counter() - t
print(json.dumps({"tokens_per_s": tokens / dt, "rss_gib": rss_gib(),
                  "trainable_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6}))
"""

TRL = r"""
import transformers
from datasets import Dataset
from trl import SFTConfig, SFTTrainer
tok = transformers.AutoTokenizer.from_pretrained(base)
model = transformers.AutoModelForCausalLM.from_pretrained(base, attn_implementation="sdpa", dtype=torch.float32)
rows = [{"prompt": c[:-1], "completion": c[-1:]} for c in convs]  # loss on the reply only
peft_config = None
if lora_r:
    from peft import LoraConfig
    peft_config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, target_modules=TARGETS)
stamps, counted = [], []
class Clock(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        stamps.append(time.perf_counter())
class Counting(SFTTrainer):
    def training_step(self, model, inputs, *a, **k):
        ids = inputs["input_ids"]
        pads = (ids == tok.pad_token_id).sum() if "position_ids" not in inputs else 0
        counted.append(int(ids.numel() - pads))
        return super().training_step(model, inputs, *a, **k)
args = SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=steps + 2, per_device_train_batch_size=batch,
                 gradient_accumulation_steps=1, learning_rate=1e-4, lr_scheduler_type="constant",
                 warmup_steps=0, max_length=seq_len, packing=True, completion_only_loss=True,
                 save_strategy="no", report_to=[], logging_steps=10**9, use_cpu=True, bf16=False,
                 dataloader_num_workers=0, disable_tqdm=True, seed=0)
trainer = Counting(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                   peft_config=peft_config, callbacks=[Clock()])
stamps.append(time.perf_counter())
trainer.train()
tokens = sum(counted[2:])
dt = stamps[-1] - stamps[2]
print(json.dumps({"tokens_per_s": tokens / dt, "rss_gib": rss_gib(),
                  "trainable_m": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad) / 1e6}))
"""


def make_base(directory: Path) -> Path:
    """A random model of the cpu-tiny shape with a tokenizer trained on the task suite's text."""
    import torch

    from llmkit.checkpoint import save_checkpoint
    from llmkit.config import resolve
    from llmkit.model.transformer import Transformer
    from llmkit.tasks import get_task
    from llmkit.tokenizer import Tokenizer

    cfg = resolve("cpu-tiny", [])
    texts = [e.prompt + "\n" + e.solution for t in TASKS for e in get_task(t).make("train", 2000, 1)]
    tok = Tokenizer.train(texts, cfg.tokenizer.vocab_size, show_progress=False)
    tok.model_max_length = cfg.model.max_position_embeddings
    cfg.model.vocab_size = 64 * -(-tok.vocab_size // 64)
    cfg.model.bos_token_id, cfg.model.eos_token_id, cfg.model.pad_token_id = tok.bos_id, tok.eos_id, tok.pad_id
    torch.manual_seed(0)
    save_checkpoint(directory, Transformer(cfg.model), tok)
    return directory


def run(library: str, args, base: Path, data: Path, lora: int) -> dict:
    code = COMMON + (LLMKIT if library == "llmkit" else TRL)
    argv = [str(base), str(data), "lora" if lora else "full", args.seq_len, args.batch, args.steps, lora]
    r = subprocess.run([sys.executable, "-c", code, "x", *map(str, argv)], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, default=None, help="checkpoint to fine-tune (default: a random cpu-tiny)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--conversations", type=int, default=600, help="per task")
    args = ap.parse_args()
    from llmkit.tasks import get_task, to_messages

    work = Path(tempfile.mkdtemp(prefix="bench_sft_"))
    base = args.base or make_base(work / "base")
    data = work / "chat.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for t in TASKS:
            for e in get_task(t).make("train", args.conversations, 0):
                f.write(json.dumps({"messages": to_messages(e)}, ensure_ascii=False) + "\n")
    print(
        f"model {base}, {len(TASKS)} tasks x {args.conversations} conversations, rows of {args.seq_len} tokens, "
        f"{args.batch} rows per step, {args.steps} timed steps, best of {args.repeats}\n"
    )
    print("| mode | library | trainable params | tokens/s | vs TRL | peak RSS | vs TRL |")
    print("|---|---|---|---|---|---|---|")
    for lora in (0, args.lora_rank):
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for library in ("llmkit", "trl"):
                r = run(library, args, base, data, lora)
                if "error" in r:
                    print(f"{library} {'lora' if lora else 'full'}: {r['error']}", file=sys.stderr)
                    continue
                if library not in best or r["tokens_per_s"] > best[library]["tokens_per_s"]:
                    best[library] = {**r, "rss_gib": min(r["rss_gib"], best.get(library, r)["rss_gib"])}
        peer = best.get("trl")
        for library, r in best.items():
            speed = f"{r['tokens_per_s'] / peer['tokens_per_s']:.2f}x" if peer else "-"
            mem = f"{r['rss_gib'] / peer['rss_gib']:.2f}x" if peer else "-"
            mode = f"LoRA r={lora}" if lora else "full"
            print(
                f"| {mode} | {library} | {r['trainable_m']:.2f}M | {r['tokens_per_s']:,.0f} | {speed} | "
                f"{r['rss_gib']:.2f} GiB | {mem} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
