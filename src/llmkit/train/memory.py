"""Training memory per process, estimated before a run starts: does a preset fit on its GPUs?

The model's state follows from the parameter count N: fp32 master weights (4N bytes), fp32
gradients (4N), the optimizer's state (AdamW: 8N; Muon: 4 bytes for its block matrices), plus DDP's
gradient buckets (another 4N), or divided by the process count under FSDP2, which instead holds the
root (embeddings, head) and two blocks gathered in the compute dtype while it works. Activations:
per token and block about ``16 C + 2 I`` values in the compute dtype kept for backward (attention
through SDPA keeps no T x T matrix); with activation checkpointing only each block's input
(C values) plus one block being recomputed; and the fp32 logits with their gradient (2 x 4 V bytes
per token). It is an estimate (allocator slack, temporary buffers and NCCL's workspace come on
top): presets keep a margin below the device's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmkit.config import ModelConfig, TrainConfig

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 2, "auto": 2}
"""Bytes of a stored activation per compute precision (fp8 keeps bf16 activations between its matmuls)."""


@dataclass
class MemoryEstimate:
    """GiB per process, by what holds it."""

    weights: float
    gradients: float
    optimizer: float
    gathered: float  # DDP's gradient buckets, or FSDP2's gathered root and blocks
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.gathered + self.activations + self.logits

    def describe(self) -> str:
        """``12.3 GiB (weights 1.0 GiB, ...)``, in MiB below 1 GiB."""
        parts = ("weights", "gradients", "optimizer", "gathered", "activations", "logits")
        return f"{_size(self.total)} (" + ", ".join(f"{name} {_size(getattr(self, name))}" for name in parts) + ")"


def _size(gib: float) -> str:
    return f"{gib * 1024:.0f} MiB" if gib < 1 else f"{gib:.1f} GiB"


def estimate(model: ModelConfig, train: TrainConfig, world_size: int) -> MemoryEstimate:
    """Estimated peak training memory of one of ``world_size`` processes, in GiB."""
    gib = 2.0**30
    c, i, layers, v = model.hidden_size, model.intermediate_size, model.num_hidden_layers, model.vocab_size
    n = model.num_params()
    embeddings = v * c * (1 if model.tie_word_embeddings else 2)
    per_block = (n - embeddings) / max(layers, 1)
    muon = layers * per_block if train.optimizer == "muon" else 0.0  # block matrices (gains are tiny)
    shards = world_size if train.parallel == "fsdp" and world_size > 1 else 1
    act = BYTES[train.dtype]
    if shards > 1:
        gathered = act * (embeddings + 2 * per_block)  # the root stays gathered; one block prefetched
    elif world_size > 1:
        gathered = 4 * n  # DDP's gradient buckets
    else:
        gathered = 0.0
    tokens = train.batch_size * train.seq_len
    per_token_block = 16 * c + 2 * i
    if train.activation_checkpointing:
        activations = act * tokens * (layers * c + per_token_block)
    else:
        activations = act * tokens * layers * per_token_block
    return MemoryEstimate(
        weights=4 * n / shards / gib,
        gradients=4 * n / shards / gib,
        optimizer=(8 * (n - muon) + 4 * muon) / shards / gib,
        gathered=gathered / gib,
        activations=activations / gib,
        logits=2 * 4 * tokens * v / gib,
    )
