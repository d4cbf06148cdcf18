"""The one training loop. Every stage (pretrain, SFT, reward, DPO, PPO, GRPO, distillation) plugs in
a :class:`Task` (data + loss + evaluation) and reuses everything else here: optimizers and
schedule, gradient accumulation, mixed precision (fp16 loss scaling), clipping, DDP or FSDP2
(``parallel.py``), activation checkpointing, evaluation, atomic checkpoints, exact resume, progress,
``metrics.jsonl`` and the loss plot.

Exact resume rests on three rules: a batch is a pure function of (seed, step, micro-batch index),
so the data position is just the step; all RNG states travel in ``trainer_state.pt``; and
``metrics.jsonl`` is cut back to the resumed step. A run killed at any moment and resumed reaches
bitwise the same weights on CPU as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from llmkit.checkpoint import CheckpointManager, load_trainer_state, publish_model
from llmkit.config import TrainConfig
from llmkit.console import say
from llmkit.errors import CheckpointError, LLMKitError
from llmkit.train import distributed, parallel
from llmkit.train.mfu import measure_peak_flops
from llmkit.train.optim import build_optimizers, lr_factor, set_lr
from llmkit.train.precision import MAX_CONSECUTIVE_SKIPS, LossScaler, apply_fp8, resolve_precision

TRAINER_STATE_VERSION = 1


class Task(Protocol):
    """What a stage supplies to the loop.

    ``batch(step, index, total)`` returns micro-batch ``index`` of ``total`` (= grad_accum x world
    size) for optimizer step ``step``: a dict of tensors with a ``count`` entry (tokens, pairs, ...)
    that the loss is normalised by. It must be a pure function of its arguments.
    ``loss(model, batch)`` returns (sum of per-item losses, extra metrics).
    ``evaluate(model)`` returns validation metrics (may shard its work by ``dist`` rank).
    ``tokens(batch)`` is the number of tokens processed, for throughput.

    Optional methods (looked up with ``getattr``; stages that do not need them leave them out):

    ``prepare(model, step, info)`` runs before the batches of every optimizer step, with the
    unwrapped model in eval mode and autograd off, and returns metrics for the step's row. RL tasks
    generate their rollouts here from the current weights when a new rollout batch is due, then
    serve several optimizer steps (epochs x minibatches) from it through ``batch``.
    ``state_dict()`` / ``load_state_dict(state)``: task state that travels in ``trainer_state.pt``
    (tensors, numbers, strings), e.g. the rollout batch of an unfinished round, so a run resumed
    between two rollouts continues from the same samples.
    ``export(model)`` returns the module to publish as the stage's model (default: ``model``),
    e.g. the policy without PPO's value head.
    """

    def batch(self, step: int, index: int, total: int) -> dict[str, Any]: ...

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]: ...

    def evaluate(self, model: nn.Module, info: distributed.DistInfo) -> dict[str, float]: ...

    def tokens(self, batch: dict[str, Any]) -> int: ...


@dataclass
class TrainResult:
    step: int
    metrics: list[dict] = field(default_factory=list)
    final_eval: dict[str, float] = field(default_factory=dict)
    tokens_per_s: float = 0.0
    mfu: float = 0.0
    elapsed_s: float = 0.0
    dtype: str = "float32"
    device: str = "cpu"


class Trainer:
    """Runs ``task`` on ``model`` for ``cfg.max_steps`` steps, writing into ``out_dir``:

    ``checkpoints/step_*/`` (resumable), ``metrics.jsonl``, ``loss.png`` and, at the end, the final
    Hugging Face model files directly in ``out_dir``.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        cfg: TrainConfig,
        out_dir: Path,
        tokenizer=None,
        extra_config: dict | None = None,
        on_log: Callable[[dict], None] | None = None,
    ):
        cfg.validate()
        self.cfg = cfg
        self.task = task
        self.out_dir = Path(out_dir)
        self.tokenizer = tokenizer
        self.extra_config = extra_config or {}
        self.on_log = on_log
        self.info = distributed.setup(cfg.device)
        self.device = self.info.device
        parallel.check_backend(cfg, self.info)
        self.precision = resolve_precision(cfg.dtype, self.device)
        self.dtype = self.precision.autocast
        if self.info.is_main:
            say(f"precision: {self.precision.name} ({self.precision.reason})")
        self.raw_model = model.to(self.device)
        if self.precision.name == "fp8":
            apply_fp8(self.raw_model)
        parallel.set_activation_checkpointing(self.raw_model, cfg.activation_checkpointing)
        # "fsdp" shards the module in place (raw_model becomes the sharded model); "ddp" wraps it
        self.model = parallel.wrap(self.raw_model, cfg, self.info, self.dtype)
        self.sharded = parallel.is_sharded(self.model)
        # the checkpoint layout follows the mode, not the process count, so any count resumes it
        self.sharded_checkpoints = cfg.parallel == "fsdp"
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.optimizers = build_optimizers(self.raw_model, cfg)
        self.scaler = LossScaler(self.precision.scaled, cfg.loss_scale)
        self.ckpts = CheckpointManager(self.out_dir / "checkpoints", keep_last=cfg.keep_last)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.step = 0

    # ---- state -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "version": TRAINER_STATE_VERSION,
            "step": self.step,
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
                "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                "numpy_pos": int(np.random.get_state()[2]),
            },
            "data_position": {"step": self.step},
            "train_config": dict(vars(self.cfg).items()),
            "task": self.task.state_dict() if hasattr(self.task, "state_dict") else {},
            "loss_scaler": self.scaler.state_dict(),
            "world_size": self.info.world_size,
            "optimizer_layout": parallel.SHARDED_DIR if self.sharded_checkpoints else "whole",
        }

    def _load_state(self, path: Path) -> None:
        from llmkit.checkpoint import load_model_weights

        state = load_trainer_state(path)
        parallel.check_global_batch(path, state, self.cfg, self.info.world_size)
        if self.sharded:
            parallel.load_full_weights(self.raw_model, path, self.info)
        else:
            load_model_weights(self.raw_model, path)
        if state.get("optimizer_layout") == parallel.SHARDED_DIR:
            if not (path / parallel.SHARDED_DIR).is_dir():
                raise CheckpointError(f"{path}: {parallel.SHARDED_DIR}/ (the optimizer state) is missing")
            parallel.load_optimizers(self.raw_model, self.optimizers, path / parallel.SHARDED_DIR)
        elif self.sharded:
            parallel.load_whole_optimizers(self.raw_model, self.optimizers, state["optimizers"])
        else:
            for opt, sd in zip(self.optimizers, state["optimizers"], strict=True):
                opt.load_state_dict(sd)
        self.scaler.load_state_dict(state.get("loss_scaler") or {})
        self.step = int(state["step"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate((3, tuple(rng["python"].tolist()), None))
        np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_pos"], 0, 0.0))
        if hasattr(self.task, "load_state_dict"):
            self.task.load_state_dict(state.get("task") or {})

    def resume(self) -> bool:
        """Load the latest complete checkpoint, if any, and cut ``metrics.jsonl`` back to it."""
        latest = self.ckpts.latest()
        if latest is None:
            if self.info.is_main and self.metrics_path.exists():
                say(
                    f"no complete checkpoint in {self.ckpts.root} (the last run stopped before its first, "
                    f"at step {min(self.cfg.ckpt_every, self.cfg.max_steps)}): starting again from step 0"
                )
                self.metrics_path.unlink()
            return False
        self._load_state(latest)
        if self.info.is_main and self.metrics_path.exists():
            kept = [
                line
                for line in self.metrics_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= self.step
            ]
            from llmkit.files import atomic_write_text

            atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))
        return True

    # ---- loop --------------------------------------------------------------------------------
    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _log(self, row: dict) -> None:
        if not self.info.is_main:
            return
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.on_log:
            self.on_log(row)

    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad(), self._autocast(), parallel.gathered(self.raw_model):
            out = self.task.evaluate(self.raw_model, self.info)
        self.model.train()
        return out

    def _save(self) -> None:
        if not self.sharded_checkpoints:
            if self.info.is_main:
                self.ckpts.save(
                    self.step, self.raw_model, self.tokenizer, self._state(), extra_config=self.extra_config
                )
            distributed.barrier(self.info)
            return
        # every process writes its optimizer shards; process 0 writes the gathered model files and
        # moves the shards in, then renames the whole checkpoint into place (atomic as ever)
        staging = self.ckpts.staging_for(self.step)
        if self.info.is_main and staging.exists():
            shutil.rmtree(staging)  # left by a run killed mid-save
        distributed.barrier(self.info)
        parallel.save_optimizers(self.raw_model, self.optimizers, staging)
        weights = parallel.full_state_dict(self.raw_model) if self.sharded else None
        if self.info.is_main:
            self.ckpts.save(
                self.step,
                self.raw_model,
                self.tokenizer,
                {**self._state(), "optimizers": []},
                extra_config=self.extra_config,
                state_dict=weights,
                extra_dirs={parallel.SHARDED_DIR: staging},
            )
        distributed.barrier(self.info)

    def _prepare(self) -> dict[str, float]:
        """The task's ``prepare`` hook (RL rollouts from the current weights), if it has one."""
        prepare = getattr(self.task, "prepare", None)
        if prepare is None:
            return {}
        self.model.eval()
        with torch.no_grad(), self._autocast(), parallel.gathered(self.raw_model):
            out = prepare(self.raw_model, self.step, self.info) or {}
        self.model.train()
        return out

    def train_step(self) -> dict[str, float]:
        """One optimizer step: accumulate micro-batches, clip, update. Returns step metrics."""
        cfg, info = self.cfg, self.info
        extra: dict[str, float] = dict(self._prepare())
        total = cfg.grad_accum * info.world_size
        batches = [self.task.batch(self.step, m * info.world_size + info.rank, total) for m in range(cfg.grad_accum)]
        count = torch.tensor(float(sum(float(b["count"]) for b in batches)), device=self.device)
        count = distributed.all_reduce_sum(count, info)  # global normaliser: exact token-weighted mean
        set_lr(self.optimizers, lr_factor(self.step, cfg))
        loss_sum = torch.zeros((), device=self.device)
        tokens = 0
        for m, batch in enumerate(batches):
            with parallel.gradient_sync(self.model, sync=m == len(batches) - 1):
                with self._autocast():
                    loss, more = self.task.loss(self.model, batch)
                (loss * (self.scaler.scale * info.world_size) / count).backward()
            loss_sum += loss.detach().float()
            tokens += self.task.tokens(batch)
            for k, v in more.items():
                extra[k] = extra.get(k, 0.0) + float(v) / len(batches)
        params = [p for p in self.raw_model.parameters() if p.requires_grad]
        self.scaler.unscale(params)
        grad_norm = float(parallel.clip_grad_norm(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf")))
        if self.scaler.update(math.isfinite(grad_norm)):  # fp16: a step with inf/nan gradients is skipped
            for opt in self.optimizers:
                opt.step()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss_sum = distributed.all_reduce_sum(loss_sum, info)
        if not self.scaler.enabled or self.scaler.consecutive >= MAX_CONSECUTIVE_SKIPS:
            _nan_guard((loss_sum / count).item(), f"step {self.step + 1}")
        self.step += 1
        if self.scaler.enabled:  # fp16: the scale for the next step and how many steps were skipped so far
            extra.update(loss_scale=self.scaler.scale, skipped_steps=self.scaler.skipped)
        return {
            "loss": (loss_sum / count).item(),
            "grad_norm": grad_norm,
            "lr": self.optimizers[0].param_groups[0]["lr"],
            "tokens": tokens * info.world_size,
            **extra,
        }

    def fit(self) -> TrainResult:
        """Train to ``cfg.max_steps`` (resuming from the latest checkpoint). Ctrl-C in a single
        process lets the step in progress finish, saves a checkpoint there, says how to resume and
        raises KeyboardInterrupt; a second Ctrl-C stops at once (every write is atomic anyway)."""
        with _Interrupts(enabled=not self.info.enabled) as self._interrupts:
            return self._fit()

    def _stop_at_interrupt(self, bar: _Progress) -> None:
        if not (self.ckpts.path_for(self.step) / "config.json").is_file():
            self._save()
        bar.close()
        say(
            f"interrupted at step {self.step}: checkpoint saved to {self.ckpts.path_for(self.step)}; "
            "run the same command again to resume from it"
        )
        raise KeyboardInterrupt

    def _fit(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.seed)
        resumed = self.resume()
        self.model.train()
        flops_per_token = getattr(self.raw_model, "flops_per_token", lambda t: 0.0)(cfg.seq_len)
        peak = measure_peak_flops(str(self.device), self.dtype) * info.world_size
        result = TrainResult(step=self.step)
        if info.is_main and resumed:
            print(f"resumed from step {self.step} ({self.ckpts.latest()})", file=sys.stderr)
        bar = _Progress(cfg.max_steps, self.step, enabled=info.is_main)
        t_start = time.perf_counter()
        tok_total, t_train = 0, 0.0
        window_tokens, window_t = 0, time.perf_counter()
        last_eval: dict[str, float] = {}
        last_eval_step = -1
        while self.step < cfg.max_steps:
            t0 = time.perf_counter()
            row = self.train_step()
            dt = time.perf_counter() - t0
            t_train += dt
            tok_total += row["tokens"]
            window_tokens += row["tokens"]
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_t, 1e-9)
                window_tokens, window_t = 0, now
                row.update(
                    step=self.step,
                    tokens_per_s=tps,
                    mfu=tps * flops_per_token / peak if peak else 0.0,
                    elapsed_s=now - t_start,
                )
                self._log(row)
                bar.update(self.step, row)
            else:
                bar.update(self.step, None)
            if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.max_steps):
                last_eval, last_eval_step = self.evaluate(), self.step
                self._log({"step": self.step, **last_eval})
                bar.note(last_eval)
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.max_steps:
                self._save()
            if self._interrupts.requested and self.step < cfg.max_steps:  # at the last step: just finish
                self._stop_at_interrupt(bar)
            if cfg.time_budget_s and time.perf_counter() - t_start > cfg.time_budget_s:
                if self.step % cfg.ckpt_every:
                    self._save()
                break
        bar.close()
        if last_eval_step != self.step:  # the final weights are always evaluated, once
            last_eval = self.evaluate()
            self._log({"step": self.step, **last_eval})
        export = getattr(self.task, "export", None)
        published = export(self.raw_model) if export else self.raw_model
        weights = parallel.full_state_dict(self.raw_model) if self.sharded else None  # collective
        if info.is_main:
            if weights is not None and published is not self.raw_model:  # PPO's policy without its value head
                prefix = next(n for n, m in self.raw_model.named_modules() if m is published) + "."
                weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            publish_model(self.out_dir, published, self.tokenizer, extra_config=self.extra_config, state_dict=weights)
            from llmkit.report import plot_metrics

            plot_metrics(self.metrics_path, self.out_dir / "loss.png")
        distributed.barrier(info)
        result.step = self.step
        result.final_eval = last_eval
        result.elapsed_s = time.perf_counter() - t_start
        result.tokens_per_s = tok_total / t_train if t_train else 0.0
        result.mfu = result.tokens_per_s * flops_per_token / peak if peak else 0.0
        result.dtype, result.device = str(self.dtype).removeprefix("torch."), str(self.device)
        return result


class _Interrupts:
    """While active, the first SIGINT (Ctrl-C) only sets ``requested``, for the loop to stop at the
    end of the step; the second raises KeyboardInterrupt as usual. Python delivers signals to the
    main thread only, so elsewhere (and under torchrun, whose agent stops the workers) this is off."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _Interrupts:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)


class _Progress:
    """tqdm on a terminal; one plain line per logged step otherwise (CI logs stay readable)."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.last = start
        self.extra = ""

    def update(self, step: int, row: dict | None) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.last)
        self.last = step
        if row is None:
            return
        text = f"loss {row['loss']:.4f} | {row['tokens_per_s']:,.0f} tok/s | mfu {100 * row['mfu']:.1f}%"
        if "reward" in row:  # RL: the latest rollout round's mean reward
            text += f" | reward {row['reward']:.3f}"
        if row.get("skipped_steps"):  # fp16: steps skipped for inf/nan gradients so far
            text += f" | skipped {row['skipped_steps']} (loss scale {row['loss_scale']:g})"
        if self.bar is not None:
            self.bar.set_postfix_str(text + self.extra, refresh=False)
        else:
            print(f"step {step:>6} | {text} | lr {row['lr']:.2e}", file=sys.stderr, flush=True)

    def note(self, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.extra = "".join(
            f" | {k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k.startswith("val")
        )
        if self.bar is None:
            print(
                "eval   " + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)),
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _nan_guard(value: float, where: str) -> None:
    if not math.isfinite(value):
        raise LLMKitError(f"{where}: loss became {value}; lower train.lr or enable train.grad_clip")
