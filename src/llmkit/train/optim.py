"""Optimizers and the learning-rate schedule.

AdamW decays only matrices (weights of linears and embeddings), never norms' gains. Muon
(momentum + Newton-Schulz orthogonalisation, as in modded-nanogpt and nanochat) is an option for
the hidden matrices of the transformer blocks; embeddings, the output head and gains stay on AdamW,
because Muon's orthogonalised update only makes sense for a matrix acting on activations.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, Replicate

from llmkit.config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based): linear warmup, then cosine
    decay to ``min_lr_ratio`` or warmup-stable-decay (linear decay over the last ``decay_fraction``)."""
    warm = min(cfg.warmup_steps, cfg.max_steps)
    if step < warm:
        return (step + 1) / warm
    floor = cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        decay_start = int(cfg.max_steps * (1 - cfg.decay_fraction))
        if step < max(decay_start, warm):
            return 1.0
        span = max(1, cfg.max_steps - max(decay_start, warm))
        return floor + (1 - floor) * max(0.0, 1 - (step - max(decay_start, warm)) / span)
    progress = (step - warm) / max(1, cfg.max_steps - warm)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def newton_schulz(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonalise G (m, n): the quintic iteration of Muon, run in bf16 on GPU
    and fp32 elsewhere. Returns a matrix with singular values near 1 and G's singular vectors."""
    a, b, c = 3.4445, -4.7750, 2.0315
    dtype = torch.bfloat16 if G.is_cuda else torch.float32
    X = G.to(dtype)
    transposed = X.size(0) > X.size(1)
    if transposed:
        X = X.T  # (n, m) so the Gram matrix is the small one
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T  # (m, m)
        B = b * A + c * A @ A
        X = a * X + B @ X
    if transposed:
        X = X.T
    return X.to(G.dtype)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised by Newton-Schulz.

    The update is scaled by ``sqrt(max(1, rows/cols))`` so tall and wide matrices move alike.
    Decoupled weight decay as in AdamW.

    With several processes the Newton-Schulz iterations, the costly part, are split among them:
    matrix ``i`` is orthogonalised by process ``i % world`` alone and its update broadcast to the
    others, so the work per process falls as 1/world and the update is exactly the one-process
    update. Momentum stays where the gradient lives: whole under DDP, a ``Shard(0)`` DTensor under
    FSDP2 (its full gradient is gathered for the owner's iteration, and each process applies its
    own rows of the update).
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, weight_decay: float = 0.0, ns_steps: int = 5):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self, closure=None):
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        work = []  # (group, param, Nesterov direction: full matrix on every process)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                g = p.grad.lerp(buf, group["momentum"])  # Nesterov
                work.append((group, p, g.full_tensor() if isinstance(g, DTensor) else g))
        updates, pending = [], []
        for i, (group, _, g) in enumerate(work):
            owner = i % world
            update = newton_schulz(g, group["ns_steps"]) if owner == rank else torch.empty_like(g)
            if distributed:
                pending.append(dist.broadcast(update, src=owner, async_op=True))
            updates.append(update)
        for handle in pending:
            handle.wait()
        for (group, p, _), update in zip(work, updates, strict=True):
            local = p.to_local() if isinstance(p, DTensor) else p
            if isinstance(p, DTensor):  # this process's rows of the full update
                full = DTensor.from_local(update, p.device_mesh, [Replicate()] * p.device_mesh.ndim)
                update = full.redistribute(p.device_mesh, p.placements).to_local()
            scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
            if group["weight_decay"]:
                local.mul_(1 - group["lr"] * group["weight_decay"])
            local.add_(update, alpha=-group["lr"] * scale)
        return None


def build_optimizers(model: nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """The optimizer(s) for ``model``: AdamW alone, or Muon for block matrices plus AdamW for the rest.

    Each param group remembers its peak ``initial_lr`` so the schedule can scale it.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    seen: set[int] = set()
    unique = []
    for n, p in params:  # tied weights appear once
        if id(p) not in seen:
            seen.add(id(p))
            unique.append((n, p))
    use_muon = cfg.optimizer == "muon"
    muon = [p for n, p in unique if use_muon and p.dim() == 2 and ".layers." in f".{n}"]
    muon_ids = {id(p) for p in muon}
    decay = [p for n, p in unique if p.dim() >= 2 and id(p) not in muon_ids]
    no_decay = [p for n, p in unique if p.dim() < 2]
    fused = {"fused": True} if any(p.is_cuda for p in decay) else {}
    adamw = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay, "initial_lr": cfg.lr},
            {"params": no_decay, "weight_decay": 0.0, "initial_lr": cfg.lr},
        ],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=1e-8,
        **fused,
    )
    optimizers: list[torch.optim.Optimizer] = [adamw]
    if muon:
        optimizers.append(
            Muon([{"params": muon, "initial_lr": cfg.muon_lr}], lr=cfg.muon_lr, weight_decay=cfg.weight_decay)
        )
    return optimizers


def set_lr(optimizers: list[torch.optim.Optimizer], factor: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factor
