"""How the one training loop spreads over processes (``train.parallel``): DDP or FSDP2.

DDP keeps a whole copy of the model and optimizer in every process and all-reduces gradients.
FSDP2 (``torch.distributed.fsdp.fully_shard``) shards every block's parameters, gradients and
optimizer state across the processes (``Shard(0)`` DTensors), all-gathers a block's parameters just
before it runs and reduce-scatters its gradients right after, so the memory per process for the
model and optimizer falls as 1/world size.

Checkpoints of an FSDP2 run: the model is gathered into the usual Hugging Face files (any tool
loads them; any number of processes resumes from them) and the optimizer state is written sharded
by ``torch.distributed.checkpoint`` (DCP) into ``sharded/`` beside them, which DCP reshards on load
to whatever number of processes resumes. DDP checkpoints keep the optimizer in ``trainer_state.pt``;
either kind resumes under either mode (converted on load).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)
from torch.distributed.tensor import DTensor

from llmkit.checkpoint import read_weights
from llmkit.config import TrainConfig
from llmkit.errors import ConfigError
from llmkit.model.transformer import DecoderLayer, LlamaBody
from llmkit.train.distributed import DistInfo

SHARDED_DIR = "sharded"
"""The DCP directory of an FSDP2 checkpoint's optimizer state."""


def check_backend(cfg: TrainConfig, info: DistInfo) -> None:
    """Refuse, in one line, what this device and process group cannot do."""
    if info.enabled and info.device.type == "mps":
        raise ConfigError(
            f"train.parallel={cfg.parallel}: torch.distributed has no backend for Apple mps; "
            "train with one process, or with train.device=cpu"
        )
    if cfg.cpu_offload and info.device.type == "cpu":
        raise ConfigError(
            "train.cpu_offload=true moves FSDP2 shards from GPU to CPU memory, but this run is on the CPU "
            "already; drop train.cpu_offload"
        )


def check_global_batch(path: Path, state: dict, cfg: TrainConfig, world: int) -> None:
    """Resuming on another number of processes continues the same run only with the same global
    batch (the batches are a function of the step and the micro-batch index): say which
    ``grad_accum`` gives it, or that this process count cannot."""
    if "world_size" not in state:  # written before process counts were recorded
        return
    old, old_world = state.get("train_config", {}), int(state["world_size"])
    saved = int(old.get("batch_size", cfg.batch_size)) * int(old.get("grad_accum", 1)) * old_world
    per_step = cfg.batch_size * world
    if saved == per_step * cfg.grad_accum:
        return
    where = f"{path} was written with a global batch of {saved} sequences ({old_world} processes)"
    if saved % per_step:
        raise ConfigError(
            f"{where}; {world} process(es) x train.batch_size={cfg.batch_size} does not divide it: "
            f"use a process count and batch_size whose product divides {saved}"
        )
    raise ConfigError(f"{where}; to resume it on {world} process(es) set train.grad_accum={saved // per_step}")


def set_activation_checkpointing(model: nn.Module, on: bool) -> None:
    """Switch per-block activation checkpointing on every llmkit decoder stack inside ``model``."""
    bodies = [m for m in model.modules() if isinstance(m, LlamaBody)]
    if on and not bodies:
        raise ConfigError("train.activation_checkpointing=true: this model has no llmkit decoder blocks to checkpoint")
    for body in bodies:
        body.checkpoint_blocks = on


def wrap(model: nn.Module, cfg: TrainConfig, info: DistInfo, compute_dtype: torch.dtype) -> nn.Module:
    """``model`` ready for ``info.world_size`` processes: itself for one, a DDP wrapper, or (for
    ``fsdp``) the same module sharded in place, one FSDP unit per decoder block plus the root
    (embeddings, final norm, head). Under FSDP2 parameters are all-gathered and gradients
    reduce-scattered in ``compute_dtype`` (bf16: half the traffic) while the sharded fp32 master
    weights and optimizer state stay fp32."""
    if not info.enabled:
        return model
    if cfg.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    if compute_dtype == torch.float16:  # fp16 sums of loss-scaled gradients overflow: reduce in fp32
        policy = MixedPrecisionPolicy(param_dtype=torch.float16, reduce_dtype=torch.float32)
    elif compute_dtype != torch.float32:
        policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=compute_dtype)
    else:
        policy = MixedPrecisionPolicy()
    offload = CPUOffloadPolicy() if cfg.cpu_offload else OffloadPolicy()
    for block in [m for m in model.modules() if isinstance(m, DecoderLayer)]:
        fully_shard(block, mp_policy=policy, offload_policy=offload)
    # Only forward() gathers a unit's shards. The engine's other entry points (hidden_states, head)
    # run inside gathered(); hooking them as well would reshard the root when the nested call ends.
    fully_shard(model, mp_policy=policy, offload_policy=offload)
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def gradient_sync(model: nn.Module, sync: bool):
    """Context for one micro-batch's backward: gradients are reduced across processes only on the
    last micro-batch of a step (DDP's ``no_sync``; FSDP2's ``set_requires_gradient_sync``)."""
    model = getattr(model, "_orig_mod", model)  # under torch.compile
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if sync or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Hold an FSDP2 model's parameters gathered for evaluation and rollouts, where processes run
    different numbers of forward passes (their shares of the validation windows, samples of
    different lengths): gathered once here, those forwards need no collectives."""
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    blocks = [m for m in units if m is not model]  # the root keeps its shards gathered between forwards anyway
    for unit in units:
        unit.unshard()
    for unit in blocks:
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in blocks:
            unit.set_reshard_after_forward(True, recurse=False)
        for unit in units:
            unit.reshard()


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm (over every process's shards under FSDP2); returns the norm
    before clipping (inf or nan when a gradient is not finite)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False)
    if isinstance(total, DTensor):
        total = total.full_tensor()  # sum of every process's squared shard norms
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The sharded model's full state dict, on CPU, in process 0 (empty elsewhere). Collective."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_weights(model: nn.Module, directory: Path, info: DistInfo) -> None:
    """Load a checkpoint's Hugging Face weights into a sharded model: process 0 reads the file and
    broadcasts each tensor, every process keeps its shards (one copy in host memory, not one per
    process). Collective."""
    state = read_weights(directory) if info.is_main else {}
    if state and model.config.tie_word_embeddings and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def save_optimizers(model: nn.Module, optimizers: list[torch.optim.Optimizer], path: Path) -> None:
    """Every process writes its shards of the optimizer state to ``path`` (DCP). Collective."""
    state = {f"optimizer_{i}": get_optimizer_state_dict(model, opt) for i, opt in enumerate(optimizers)}
    dcp.save(state, checkpoint_id=str(path), no_dist=not _in_process_group())


def load_optimizers(model: nn.Module, optimizers: list[torch.optim.Optimizer], path: Path) -> None:
    """Read DCP optimizer state written by any number of processes into this run's optimizers
    (sharded or whole: DCP reads each process's part)."""
    state = {f"optimizer_{i}": get_optimizer_state_dict(model, opt) for i, opt in enumerate(optimizers)}
    dcp.load(state, checkpoint_id=str(path), no_dist=not _in_process_group())
    for i, opt in enumerate(optimizers):
        set_optimizer_state_dict(model, opt, state[f"optimizer_{i}"])


def _in_process_group() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def load_whole_optimizers(model: nn.Module, optimizers: list[torch.optim.Optimizer], saved: list[dict]) -> None:
    """Load optimizer state dicts of a DDP or single-process checkpoint (parameters numbered in
    param-group order) into a sharded model's optimizers: renamed to parameter names, then sharded."""
    names = {id(p): name for name, p in model.named_parameters()}
    for opt, sd in zip(optimizers, saved, strict=True):
        order = [names[id(p)] for group in opt.param_groups for p in group["params"]]
        full = {
            "state": {order[int(i)]: s for i, s in sd["state"].items()},
            "param_groups": [{**g, "params": [order[int(i)] for i in g["params"]]} for g in sd["param_groups"]],
        }
        set_optimizer_state_dict(model, opt, full, options=StateDictOptions(full_state_dict=True))
