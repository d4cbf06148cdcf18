"""Which device to run on: ``auto`` picks the best one present; a named one must exist here.

One place for the choice that training (``train.device``) and inference (``--device``) both make,
so a device this machine does not have is one line that says what it has, not a CUDA traceback.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmkit.errors import ConfigError


def cpu_has_native_bf16(cpuinfo: str | Path | None = None) -> bool | None:
    """Whether the CPU computes bf16 matmuls in hardware (x86 AVX512-BF16 or AMX, Arm BF16): from
    PyTorch's CPU capabilities, then the flags the kernel lists in ``cpuinfo`` (/proc/cpuinfo);
    None where neither says (then a timing probe decides). Given ``cpuinfo``, only that file is read.

    A flag, not a timing: a matmul race run while the machine is busy can pick the slower dtype."""
    if cpuinfo is None:
        caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        if caps.get("avx512_bf16") or caps.get("amx_bf16"):
            return True
        cpuinfo = "/proc/cpuinfo"
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def available() -> list[str]:
    """The device types this machine can run on, best first."""
    out = []
    if torch.cuda.is_available():
        out.append("cuda" if torch.cuda.device_count() == 1 else f"cuda:0..{torch.cuda.device_count() - 1}")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return [*out, "cpu"]


def pick_device(requested: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (or None): cuda (``cuda:local_rank``), then mps, then cpu. A named device is
    checked: an unknown name or one this machine lacks raises a ConfigError listing what it has."""
    if requested is None or requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if "mps" in available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {requested!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    have = available()
    missing = (
        (device.type == "cuda" and not torch.cuda.is_available())
        or (device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count())
        or (device.type == "mps" and "mps" not in have)
        or device.type not in ("cpu", "cuda", "mps")
    )
    if missing:
        raise ConfigError(f"device {requested!r} is not available on this machine; it has: {', '.join(have)}")
    return device


def fp8_unsupported(device: torch.device) -> str | None:
    """Why fp8 training cannot run on ``device`` (None when it can): torchao's float8 matmuls need
    FP8 tensor cores, NVIDIA compute capability 8.9 or newer (Ada, Hopper, Blackwell)."""
    if device.type != "cuda":
        return f"this run is on {device.type}"
    if torch.cuda.get_device_capability(device) < (8, 9):
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} has compute capability {major}.{minor}"
    return None
