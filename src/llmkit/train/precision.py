"""Mixed precision for the training loop: which dtype (``train.dtype``), fp16's dynamic loss scaling,
and fp8 matmuls through torchao.

Master weights and optimizer state stay fp32 in every mode; only the forward/backward compute drops
precision. ``bf16`` has fp32's exponent range and needs no scaling. ``fp16`` has 5 exponent bits:
small gradients underflow to zero unless the loss is multiplied by a large factor before backward,
and a factor too large overflows them to inf. :class:`LossScaler` keeps the factor as large as
works: every step with a non-finite gradient is skipped (no update) and halves the factor; every
``GROWTH_INTERVAL`` clean steps double it (the rule of Micikevicius et al. 2018, and of
``torch.amp.GradScaler``, written out here so it is the same for DDP and FSDP2 shards). ``fp8``
keeps bf16 autocast and swaps the linears of the blocks for torchao's float8 training linears,
which needs FP8 tensor cores (compute capability 8.9: Ada, Hopper, Blackwell).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llmkit.devices import cpu_has_native_bf16, fp8_unsupported
from llmkit.errors import ConfigError
from llmkit.train.mfu import measure_peak_flops

GROWTH_INTERVAL = 1000
"""Clean fp16 steps after which the loss scale doubles."""
MAX_CONSECUTIVE_SKIPS = 50
"""fp16 steps in a row with non-finite gradients before training stops: the loss itself diverged."""


@dataclass
class Precision:
    """What ``train.dtype`` resolved to on this device, and why."""

    name: str  # fp32 | bf16 | fp16 | fp8
    autocast: torch.dtype  # the compute dtype of matmuls (fp8: bf16 around the float8 linears)
    reason: str  # one phrase for the log: what ``auto`` saw

    @property
    def scaled(self) -> bool:
        return self.name == "fp16"


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """``auto``: bf16 on CUDA with bf16 support, fp16 (with loss scaling) on older CUDA GPUs; on CPU
    bf16 only when it has bf16 matmul instructions (CPUs with
    AVX512-BF16, AMX, Arm BF16; a timing probe where the CPU flags cannot be read), fp32 otherwise.
    Named choices are checked against the hardware."""
    if requested == "fp32":
        return Precision("fp32", torch.float32, "requested")
    if requested == "bf16":
        return Precision("bf16", torch.bfloat16, "requested")
    if requested == "fp16":
        return Precision("fp16", torch.float16, "requested")
    if requested == "fp8":
        _check_fp8(device)
        return Precision("fp8", torch.bfloat16, "requested")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", torch.bfloat16, f"auto: {torch.cuda.get_device_name(device)} has bf16")
        return Precision("fp16", torch.float16, f"auto: {torch.cuda.get_device_name(device)} lacks bf16")
    if device.type == "cpu":
        native = cpu_has_native_bf16()
        if native is not None:
            if native:
                return Precision("bf16", torch.bfloat16, "auto: this CPU has bf16 matmul instructions")
            return Precision("fp32", torch.float32, "auto: this CPU has no bf16 matmul instructions")
        bf16, fp32 = measure_peak_flops("cpu", torch.bfloat16), measure_peak_flops("cpu", torch.float32)
        ratio = bf16 / fp32  # CPU flags unreadable: a timing probe decides
        if ratio >= 1.3:
            return Precision("bf16", torch.bfloat16, f"auto: this CPU's bf16 matmuls are {ratio:.2f}x fp32")
        return Precision("fp32", torch.float32, f"auto: this CPU's bf16 matmuls are only {ratio:.2f}x fp32")
    return Precision("fp32", torch.float32, f"auto: {device.type}")


def _check_fp8(device: torch.device) -> None:
    why = fp8_unsupported(device)
    if why:
        raise ConfigError(f"train.dtype=fp8 needs a GPU with FP8 tensor cores (compute capability 8.9+); {why}")
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        raise ConfigError("train.dtype=fp8 trains through torchao: pip install torchao") from None


def apply_fp8(model: nn.Module) -> None:
    """Swap the blocks' linears for torchao float8 training linears (the head and embeddings stay
    bf16: their shapes and the loss are sensitive). Call before sharding."""
    from torchao.float8 import convert_to_float8_training

    convert_to_float8_training(model, module_filter_fn=lambda mod, fqn: ".layers." in f".{fqn}.")


class LossScaler:
    """Dynamic loss scaling for fp16 (disabled for the other precisions: scale 1, nothing skipped).

    ``scale`` multiplies the loss before backward; :meth:`unscale` divides the gradients back;
    :meth:`update` is told whether the step's gradients were finite and adjusts the scale.
    """

    def __init__(self, enabled: bool, initial: float = 2.0**16):
        self.enabled = enabled
        self.scale = float(initial) if enabled else 1.0
        self.clean_steps = 0  # finite steps since the last change of scale
        self.skipped = 0  # steps skipped over the whole run
        self.consecutive = 0

    def unscale(self, params: list[torch.Tensor]) -> None:
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, 1.0 / self.scale)

    def update(self, finite: bool) -> bool:
        """Record the step's outcome; returns whether the optimizer may step."""
        if not self.enabled:
            return True
        if finite:
            self.consecutive = 0
            self.clean_steps += 1
            if self.clean_steps >= GROWTH_INTERVAL:
                self.scale *= 2.0
                self.clean_steps = 0
            return True
        self.skipped += 1
        self.consecutive += 1
        self.clean_steps = 0
        self.scale = max(self.scale / 2.0, 1.0)
        return False

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "clean_steps": self.clean_steps, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.scale = float(state["scale"])
            self.clean_steps = int(state["clean_steps"])
            self.skipped = int(state["skipped"])
