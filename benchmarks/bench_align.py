"""Alignment measurements: GRPO and DPO throughput against TRL, held-out accuracy of SFT, DPO and
RL on a finished speedrun, and distillation from a 4x larger teacher.

    python benchmarks/bench_align.py throughput                 # GRPO + DPO vs TRL, same model/data
    python benchmarks/bench_align.py accuracy --run runs/cpu-tiny --n 500     # or --models SFT, then RL, DPO
    python benchmarks/bench_align.py distill --run runs/cpu-tiny --steps 300

``throughput``: one tiny Llama (the cpu-tiny shape, random weights, a tokenizer trained on the
Shakespeare corpus) saved once; llmkit (``run_grpo`` / ``run_dpo``) and TRL (``GRPOTrainer`` /
``DPOTrainer`` over the same checkpoint loaded by transformers) train on the same prompts or
pairs with the same batch, completion length, learning rate and loss, on the same CPU threads,
alternating, each library in a fresh subprocess. Reported: the median optimizer step time (steps
after the first) and, for GRPO, rollout tokens/s (generated tokens over generation time).

``accuracy``: the run's ``sft/`` and ``rl/`` models (and a DPO model trained here from ``sft/`` on
task-suite pairs, unless ``--dpo`` names one) answer ``--n`` held-out test examples of every task
the SFT stage evaluated; accuracy with its standard error per task and model.

``distill``: a student of about a quarter of the run's base model's size, trained ``--steps`` on
the run's shards twice, alone and distilled from ``base/``; validation loss of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETUP = r"""
import json, sys, torch
from pathlib import Path
from llmkit.checkpoint import save_checkpoint
from llmkit.config import resolve
from llmkit.data.corpora import corpus_documents
from llmkit.model.transformer import Transformer
from llmkit.tokenizer import Tokenizer
from llmkit.train.task_data import examples, language_pairs, wrong_answer_pairs

root = Path(sys.argv[1])
cfg = resolve("cpu-tiny")
docs = corpus_documents("shakespeare")
tok = Tokenizer.train([next(docs) for _ in range(6)], 4096, show_progress=False)
cfg.model.vocab_size = 4096
cfg.model.bos_token_id, cfg.model.eos_token_id, cfg.model.pad_token_id = tok.bos_id, tok.eos_id, tok.pad_id
torch.manual_seed(0)
save_checkpoint(root / "model", Transformer(cfg.model), tokenizer=tok)
exs = examples(["add2", "sub2", "compare2", "copy"], "train", 64, 0)
with open(root / "prompts.jsonl", "w") as f:
    for e in exs:
        f.write(json.dumps({"prompt": e.prompt}) + "\n")
with open(root / "pairs.jsonl", "w") as f:
    for p in wrong_answer_pairs(exs, 0) + language_pairs(exs):
        f.write(json.dumps({"prompt": p.messages[-1]["content"] + "\n", "chosen": p.chosen, "rejected": p.rejected},
                           ensure_ascii=False) + "\n")
(root / "reward.py").write_text(
    "def digits(prompt=None, completion=None, completions=None, **kw):\n"
    "    score = lambda c: sum(ch.isdigit() for ch in c) / max(1, len(c))\n"
    "    return [score(c) for c in completions] if completions is not None else score(completion)\n"
)
print("{}")
"""

LLMKIT = r"""
import json, sys, torch
from pathlib import Path
from llmkit.config import resolve
root, kind, steps, out = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
common = ["train.device=cpu", "train.dtype=fp32", "train.log_every=1", f"train.seed=0"]
if kind == "grpo":
    from llmkit.train.grpo import run_grpo
    cfg = resolve("cpu-tiny", common + [
        f"grpo.prompts={root / 'prompts.jsonl'}", f"grpo.reward={root / 'reward.py'}:digits",
        "grpo.samples=8", "grpo.prompts_per_round=4", "grpo.max_new_tokens=32", "grpo.loss_norm=token",
        f"grpo.max_steps={steps}", "grpo.eval_every=0", "grpo.eval_prompts=0", f"grpo.ckpt_every={steps}",
        "grpo.lr=1e-5", "grpo.warmup_steps=0"])
    run_grpo(root / "model", out, cfg)
else:
    from llmkit.train.dpo import run_dpo
    cfg = resolve("cpu-tiny", common + [
        f"dpo.data={root / 'pairs.jsonl'}", "dpo.batch_size=8", f"dpo.max_steps={steps}", "dpo.eval_every=0",
        "dpo.val_fraction=0.0", f"dpo.ckpt_every={steps}", "dpo.lr=1e-5", "dpo.warmup_steps=0", "dpo.beta=0.1"])
    run_dpo(root / "model", out, cfg)
rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
steps_t = [r["elapsed_s"] for r in rows if "loss" in r]
print(json.dumps({"step_times": [b - a for a, b in zip(steps_t, steps_t[1:])],
                  "rollout_tokens_per_s": [r["rollout_tokens_per_s"] for r in rows if "rollout_tokens_per_s" in r]}))
"""

TRL = r"""
import json, sys, time, warnings, torch
from pathlib import Path
warnings.filterwarnings("ignore")
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
root, kind, steps, out = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(int(sys.argv[5]))
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(root / "model", dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(root / "model")
stamps = []

class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        stamps.append(time.perf_counter())

common = dict(output_dir=out, report_to=[], use_cpu=True, max_steps=steps, logging_steps=1, save_strategy="no",
              learning_rate=1e-5, lr_scheduler_type="cosine", warmup_steps=0, seed=0, bf16=False,
              dataloader_num_workers=0)
gen = []
if kind == "grpo":
    from trl import GRPOConfig, GRPOTrainer
    sys.path.insert(0, str(root))
    from reward import digits
    ds = load_dataset("json", data_files=str(root / "prompts.jsonl"), split="train")
    args = GRPOConfig(per_device_train_batch_size=32, num_generations=8, max_completion_length=32,
                      temperature=1.0, top_k=0, top_p=1.0, beta=0.0, loss_type="dapo", num_iterations=1, **common)
    trainer = GRPOTrainer(model=model, reward_funcs=digits, args=args, train_dataset=ds, processing_class=tok,
                          callbacks=[Clock()])
    inner = trainer._generate_single_turn
    def timed(*a, **k):
        t = time.perf_counter()
        ids, lps = inner(*a, **k)
        gen.append((sum(len(c) for c in ids), time.perf_counter() - t))
        return ids, lps
    trainer._generate_single_turn = timed
else:
    from trl import DPOConfig, DPOTrainer
    ds = load_dataset("json", data_files=str(root / "pairs.jsonl"), split="train")
    args = DPOConfig(per_device_train_batch_size=8, beta=0.1, precompute_ref_log_probs=True, max_length=256,
                     loss_type=["sigmoid"], **common)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
trainer.train()
print(json.dumps({"step_times": [b - a for a, b in zip(stamps, stamps[1:])],
                  "rollout_tokens_per_s": [n / t for n, t in gen]}))
"""


def _run(code: str, *args) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"benchmark worker failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def throughput(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench_align_"))
    _run(SETUP, root)
    print(
        f"model: cpu-tiny shape, random weights; {args.steps} steps per run, {args.threads} threads, "
        f"best of {args.repeats} alternating runs\n"
    )
    print("| method | library | median step (s) | optimizer steps/s | rollout tokens/s | llmkit vs TRL |")
    print("|---|---|---:|---:|---:|---:|")
    for kind in ("grpo", "dpo"):
        best: dict[str, dict] = {}
        for rep in range(args.repeats):
            for name, code in (("llmkit", LLMKIT), ("TRL", TRL)):
                r = _run(code, root, kind, args.steps, root / f"{name}-{kind}-{rep}", args.threads)
                step = statistics.median(r["step_times"])
                tps = statistics.median(r["rollout_tokens_per_s"]) if r["rollout_tokens_per_s"] else 0.0
                if name not in best or step < best[name]["step"]:
                    best[name] = {"step": step, "tps": tps}
        for name in ("llmkit", "TRL"):
            b = best[name]
            ratio = best["TRL"]["step"] / best["llmkit"]["step"] if name == "llmkit" else 1.0
            rollout = f"{b['tps']:,.0f}" if kind == "grpo" else "-"
            print(
                f"| {kind.upper()} | {name} | {b['step']:.3f} | {1 / b['step']:.2f} | {rollout} | {ratio:.2f}x |",
                flush=True,
            )


ACCURACY = r"""
import json, math, sys, torch
from pathlib import Path
from llmkit.checkpoint import load_model
from llmkit.config import resolve
from llmkit.stages.sft import _corpus_tasks
from llmkit.tasks import get_task
from llmkit.tasks.runner import evaluate_tasks
from llmkit.tokenizer import Tokenizer
import yaml

run, n, models = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]))
cfg = resolve(base=yaml.safe_load((run / "config.yaml").read_text()))
names = list(json.loads((run / "sft" / "eval_sft.json").read_text())["scores"])
corpus = {t.name: t for t in _corpus_tasks(cfg)}
exs = []
for name in names:
    task = corpus.get(name) or get_task(name)
    exs += task.make("test", n, cfg.train.seed + 1)
out = {}
for label, path in models.items():
    r = evaluate_tasks(load_model(path), Tokenizer.load(path), exs, mode="chat")
    out[label] = r.table()
print(json.dumps(out))
"""


def accuracy(args) -> None:
    run = Path(args.run)
    rl_tasks = json.loads((run / "rl" / "eval_rl.json").read_text())["train"]["tasks"].removeprefix("tasks:")
    dpo = Path(args.dpo) if args.dpo else run / "dpo"
    paths = {"SFT": run / "sft", "DPO": dpo, "RL": run / "rl"}
    scores = {}
    for label in args.models:  # each model's scores are kept, so the measurement can be split into runs
        cache = run / f"bench_accuracy_{label.lower()}_n{args.n}.json"
        if cache.is_file():
            scores[label] = json.loads(cache.read_text())
            continue
        if label == "DPO" and not (dpo / "config.json").is_file():
            _train_dpo(run, dpo, rl_tasks, args.dpo_overrides)
        scores[label] = _run(ACCURACY, run, args.n, json.dumps({label: str(paths[label])}), args.threads)[label]
        cache.write_text(json.dumps(scores[label]))
    if not {"SFT", "DPO", "RL"} <= set(scores):
        print(f"kept scores of {', '.join(scores)}; run again with the other models to get the table")
        return
    trained = set(rl_tasks.split(","))
    print(f"held-out test examples per task: up to {args.n}; RL and DPO trained on: {', '.join(sorted(trained))}\n")
    print("| task | n | SFT | DPO | RL | RL - SFT (SE) | DPO - SFT (SE) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for task, s in scores["SFT"].items():
        d, r = scores["DPO"][task], scores["RL"][task]
        mark = " (trained)" if task in trained else ""
        print(f"| {task}{mark} | {s['n']} | {_cell(s)} | {_cell(d)} | {_cell(r)} | {_gap(r, s)} | {_gap(d, s)} |")


def _train_dpo(run: Path, out: Path, tasks: str, overrides: list[str]) -> None:
    """DPO from the run's SFT model on task-suite pairs of the tasks RL trained on."""
    cmd = [sys.executable, "-m", "llmkit.cli", "dpo", run / "sft", *overrides, "--data", f"tasks:{tasks}"]
    cmd += ["--out", out, "--preset", run / "config.yaml"]
    subprocess.run([str(c) for c in cmd], check=True)


def _cell(x: dict) -> str:
    return f"{100 * x['accuracy']:.1f} ± {100 * x['stderr']:.1f}"


def _gap(x: dict, ref: dict) -> str:
    """Accuracy difference in points and in standard errors of the difference."""
    se = (x["stderr"] ** 2 + ref["stderr"] ** 2) ** 0.5
    diff = x["accuracy"] - ref["accuracy"]
    return f"{100 * diff:+.1f} ({diff / se:+.1f})" if se else f"{100 * diff:+.1f}"


def distill(args) -> None:
    run = Path(args.run)
    out = Path(args.out or run / "distill_bench")
    shape = [
        "model.hidden_size=128",
        "model.num_hidden_layers=4",
        "model.num_attention_heads=4",
        "model.num_key_value_heads=2",
    ]
    results = {}
    for label, alpha in (("alone", 0.0), ("distilled", args.alpha)):
        cmd = [
            sys.executable,
            "-m",
            "llmkit.cli",
            "distill",
            "--teacher",
            run / "base",
            "--run-dir",
            run,
            "--out",
            out / label,
            "--preset",
            run / "config.yaml",
            *shape,
            f"distill.alpha={alpha}",
            f"distill.max_steps={args.steps}",
            f"distill.temperature={args.temperature}",
            f"distill.eval_every={args.steps}",
            f"distill.ckpt_every={args.steps}",
            "train.eval_batches=16",
        ]
        subprocess.run([str(c) for c in cmd], check=True)
        results[label] = json.loads((out / label / "train_summary.json").read_text())
    teacher = json.loads((run / "base" / "train_summary.json").read_text())
    print(
        f"student {shape}, {args.steps} steps on {run}/data, forward KL at T={args.temperature}, alpha={args.alpha}\n"
    )
    print("| model | val loss (nats/token) | val bits/byte |")
    print("|---|---:|---:|")
    print(f"| teacher (run's base) | {teacher['val_loss']:.4f} | {teacher['val_bpb']:.4f} |")
    for label, r in results.items():
        print(f"| student, {label} | {r['val_loss']:.4f} | {r['val_bpb']:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--steps", type=int, default=8)
    t.add_argument("--repeats", type=int, default=2)
    t.add_argument("--threads", type=int, default=2)
    a = sub.add_parser("accuracy")
    a.add_argument("--run", required=True, help="a finished speedrun directory (with sft/ and rl/)")
    a.add_argument("--n", type=int, default=500, help="held-out examples per task")
    a.add_argument("--dpo", default=None, help="a DPO model to evaluate (default: train RUN/dpo from sft/)")
    a.add_argument("--dpo-overrides", nargs="*", default=[], help="dpo.* settings for the DPO run")
    a.add_argument("--threads", type=int, default=2)
    a.add_argument(
        "--models", nargs="+", default=["SFT", "DPO", "RL"], choices=["SFT", "DPO", "RL"], help="models to score now"
    )
    d = sub.add_parser("distill")
    d.add_argument("--run", required=True, help="a speedrun directory whose base/ is the teacher")
    d.add_argument("--out", default=None)
    d.add_argument("--steps", type=int, default=300)
    d.add_argument("--alpha", type=float, default=0.8)
    d.add_argument("--temperature", type=float, default=1.0)
    args = ap.parse_args()
    {"throughput": throughput, "accuracy": accuracy, "distill": distill}[args.what](args)


if __name__ == "__main__":
    main()
