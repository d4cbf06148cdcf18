"""The speedrun pipeline: corpus -> tokenizer -> shards -> pretrain -> samples -> report.

Each stage writes into the run directory and is skipped when its output is already complete, so
re-running the same command resumes where it stopped (pretraining itself resumes mid-way from its
latest checkpoint). Under ``torchrun`` rank 0 prepares the data while the others wait.

Layout of ``runs/<name>/``::

    config.yaml        the resolved config (the run can be repeated from it)
    data/stats.json    documents, characters, bytes per source, warnings
    tokenizer/         tokenizer.json + tokenizer_config.json
    data/train/        token shards (memmap) + index.json
    data/val/<source>/ held-out shards, one set per source
    base/              the pretrained model (HF layout), checkpoints/, metrics.jsonl, loss.png
    report.md
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from llmkit.checkpoint import atomic_write_json, check_checkpoint
from llmkit.config import RunConfig
from llmkit.errors import ConfigError, DataError
from llmkit.train import distributed


def say(msg: str) -> None:
    print(f"[llmkit] {msg}", file=sys.stderr, flush=True)


@dataclass
class PreparedData:
    tokenizer: object
    train: object  # TokenShards
    val: dict  # source name -> TokenShards
    stats: dict


def _diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def init_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    """Create the run directory and save the resolved config; refuse to mix configs in one run."""
    path = run_dir / "config.yaml"
    current = cfg.to_dict()
    if path.is_file():
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        changed = [k for k in _diff(saved, current) if not k.startswith("sample.") and k != "preset"]
        if changed:
            raise ConfigError(
                f"{path}: this run was started with a different config ({', '.join(changed[:4])}); "
                "use a new --run-dir, or delete the run directory to start over"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(path)


def prepare_data(cfg: RunConfig, run_dir: Path) -> PreparedData:
    """Corpus -> split -> tokenizer -> shards, each step skipped when already done."""
    from llmkit.data.shards import TokenShards, write_shards
    from llmkit.data.splits import SplitCorpus
    from llmkit.tokenizer import Tokenizer

    tok_dir, train_dir, val_root = run_dir / "tokenizer", run_dir / "data" / "train", run_dir / "data" / "val"
    stats_path = run_dir / "data" / "stats.json"
    if (tok_dir / "tokenizer.json").is_file() and (train_dir / "index.json").is_file() and stats_path.is_file():
        tok = Tokenizer.load(tok_dir)
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        val = {name: TokenShards(val_root / name, expect_tokenizer=tok.fingerprint()) for name in stats["val_sets"]}
        return PreparedData(tok, TokenShards(train_dir, expect_tokenizer=tok.fingerprint()), val, stats)

    t0 = time.perf_counter()
    corpus = SplitCorpus(cfg.data, cfg.train.seed)
    if not (tok_dir / "tokenizer.json").is_file():
        texts = _first_chars(corpus.train_documents(), cfg.tokenizer.max_train_chars)
        tok = Tokenizer.train(
            texts, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency, show_progress=sys.stderr.isatty()
        )
        tok.save(tok_dir)
        say(f"tokenizer: {tok.vocab_size} tokens trained in {time.perf_counter() - t0:.1f}s -> {tok_dir}")
    tok = Tokenizer.load(tok_dir)

    t1 = time.perf_counter()
    train_index = write_shards(
        corpus.train_documents(collect_validation=True),
        tok,
        train_dir,
        source=",".join(cfg.data.sources),
        show_progress=sys.stderr.isatty(),
    )
    for w in corpus.warnings():
        say(f"warning: {w}")
    if not train_index["tokens"]:
        raise DataError(f"data.sources={cfg.data.sources} gave no training documents; add text")
    val_sets = {}
    for name, docs in corpus.val.items():
        write_shards(docs, tok, val_root / name, source=name, show_progress=False)
        val_sets[name] = TokenShards(val_root / name, expect_tokenizer=tok.fingerprint())
    say(
        f"shards: {train_index['tokens']:,} training tokens from {train_index['documents']:,} documents "
        f"({time.perf_counter() - t1:.1f}s)"
    )
    stats = {
        "sources": corpus.summary(),
        "warnings": corpus.warnings(),
        "val_sets": list(val_sets),
        "train_tokens": train_index["tokens"],
        "train_bytes": train_index.get("bytes", 0),
        "val_tokens": {k: len(v) for k, v in val_sets.items()},
    }
    atomic_write_json(stats_path, stats)
    return PreparedData(tok, TokenShards(train_dir, expect_tokenizer=tok.fingerprint()), val_sets, stats)


def _first_chars(docs, budget: int):
    """The documents, cut off after ``budget`` characters in total (0 = no limit)."""
    if not budget:
        yield from docs
        return
    for doc in docs:
        yield doc[:budget]
        budget -= len(doc)
        if budget <= 0:
            return


def _prepare_on_rank0(cfg: RunConfig, run_dir: Path, info: distributed.DistInfo) -> PreparedData:
    if info.is_main:
        data = prepare_data(cfg, run_dir)
        distributed.barrier(info)
        return data
    distributed.barrier(info)
    return prepare_data(cfg, run_dir)


def run_pretrain(cfg: RunConfig, run_dir: Path):
    """Prepare data if needed, then pretrain (resuming) into ``run_dir/base``. Returns TrainResult or
    None when the base model is already complete."""
    from llmkit.model.transformer import Transformer
    from llmkit.train.pretrain import PretrainTask
    from llmkit.train.trainer import Trainer

    info = distributed.setup(cfg.train.device)
    if info.is_main:
        init_run_dir(cfg, run_dir)
    data = _prepare_on_rank0(cfg, run_dir, info)
    base = run_dir / "base"
    if (base / "config.json").is_file() and (base / "DONE").is_file():
        say(f"pretrain: {base} is complete; skipping (delete it to train again)")
        return None
    cfg.model.vocab_size = 64 * -(-data.tokenizer.vocab_size // 64)  # round up for matmul efficiency
    cfg.model.bos_token_id, cfg.model.eos_token_id, cfg.model.pad_token_id = (
        data.tokenizer.bos_id,
        data.tokenizer.eos_id,
        data.tokenizer.pad_id,
    )
    cfg.model.validate()
    if cfg.model.max_position_embeddings < cfg.train.seq_len:
        raise ConfigError(
            f"train.seq_len={cfg.train.seq_len} exceeds model.max_position_embeddings="
            f"{cfg.model.max_position_embeddings}; lower one or raise the other"
        )
    data.tokenizer.model_max_length = cfg.model.max_position_embeddings  # saved beside the model
    torch.manual_seed(cfg.train.seed)
    model = Transformer(cfg.model)
    device = distributed.pick_device(cfg.train.device, info.local_rank)
    task = PretrainTask(
        data.train,
        data.val,
        cfg.train.seq_len,
        cfg.train.batch_size,
        data.tokenizer.token_bytes(),
        seed=cfg.train.seed,
        eval_batches=cfg.train.eval_batches,
        device=device,
    )
    if info.is_main:
        say(
            f"pretrain: {model.num_params() / 1e6:.2f}M parameters, {cfg.train.max_steps} steps of "
            f"{cfg.train.batch_size * cfg.train.grad_accum * info.world_size} x {cfg.train.seq_len} tokens "
            f"on {device} ({info.world_size} process{'es' if info.world_size > 1 else ''})"
        )
    trainer = Trainer(model, task, cfg.train, base, tokenizer=data.tokenizer, extra_config={"llmkit_stage": "base"})
    result = trainer.fit()
    if info.is_main and result.step >= cfg.train.max_steps:
        summary = {
            "step": result.step,
            "device": result.device,
            "dtype": result.dtype,
            "processes": info.world_size,
            "tokens_per_s": result.tokens_per_s,
            "mfu": result.mfu,
            "train_seconds": result.elapsed_s,
            **result.final_eval,
        }
        atomic_write_json(base / "train_summary.json", summary)
        (base / "DONE").write_text("complete\n")
    return result


def run_samples(cfg: RunConfig, run_dir: Path) -> list[dict]:
    """Generate the preset's sample prompts from the base model (the inference engine)."""
    import llmkit

    lm = llmkit.load(run_dir / "base", device="cpu", inference_only=True)
    texts = lm.generate(
        list(cfg.sample.prompts),
        max_new_tokens=cfg.sample.max_new_tokens,
        temperature=cfg.sample.temperature,
        top_k=cfg.sample.top_k,
        seed=cfg.train.seed,
    )
    samples = [{"prompt": p, "text": t} for p, t in zip(cfg.sample.prompts, texts, strict=True)]
    atomic_write_json(run_dir / "base" / "samples.json", samples)
    return samples


def speedrun(cfg: RunConfig, run_dir: Path) -> Path:
    """The whole pipeline that exists so far, resumable; returns the path of report.md."""
    from llmkit.report import write_report

    t0 = time.perf_counter()
    run_pretrain(cfg, run_dir)
    info = distributed.setup(cfg.train.device)
    if not info.is_main:
        return run_dir / "report.md"
    check_checkpoint(run_dir / "base")
    samples = run_samples(cfg, run_dir)
    for s in samples:
        say(f"sample: {s['prompt']}{s['text'][:200]!r}")
    stats = json.loads((run_dir / "data" / "stats.json").read_text(encoding="utf-8"))
    summary = json.loads((run_dir / "base" / "train_summary.json").read_text(encoding="utf-8"))
    data_rows = {
        f"{src} documents (train/val)": f"{v['train_documents']:,} / {v['val_documents']:,}"
        for src, v in stats["sources"].items()
    }
    data_rows.update({f"{src} bytes": v["bytes"] for src, v in stats["sources"].items()})
    data_rows["training tokens"] = stats["train_tokens"]
    if stats.get("train_bytes"):
        data_rows["bytes per token (train)"] = stats["train_bytes"] / max(1, stats["train_tokens"])
    for w in stats.get("warnings", []):
        data_rows[f"warning {len(data_rows)}"] = w
    train_rows = {
        "steps": summary["step"],
        "device / autocast dtype / processes": f"{summary.get('device')} / {summary.get('dtype')} / "
        f"{summary.get('processes', 1)}",
        "tokens/s": summary["tokens_per_s"],
        "MFU (vs measured matmul peak)": f"{100 * summary['mfu']:.1f}%",
        "training time (s)": summary["train_seconds"],
    }
    train_rows.update({k: v for k, v in summary.items() if k.startswith("val_")})
    path = write_report(
        run_dir,
        {
            "Data": data_rows,
            "Pretraining": train_rows,
            "Samples": samples,
            "Pipeline": f"Total wall time of this invocation: {time.perf_counter() - t0:.0f} s.",
        },
    )
    say(f"report: {path}")
    return path
