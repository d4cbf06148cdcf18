"""Weight-only quantization formats: the arithmetic, with no modules and no kernels.

Both schemes are symmetric (no zero point), so a quantized row is ``scale * q``:

* ``int8``: one scale per output row (channel): ``q = round(w / s)``, ``s = max|w_row| / 127``.
* ``int4``: one scale per ``group_size`` consecutive inputs of a row: ``q`` in [-8, 7],
  ``s = max|w_group| / 7.5`` (the largest weight lands on the grid's edge: -8 or 7 after
  rounding). Two weights share a byte (``packed[:, j] = (q[:, 2j] + 8) | (q[:, 2j + 1] + 8) << 4``).

Scales are rounded to fp16 before the weights are divided by them, so what is stored (fp16
scales, int8/uint8 weights) is exactly what every kernel computes with: a saved model reloads bit
for bit. An int4 weight thus costs 4 + 16 / group_size bits (4.5 at group 32, like GGUF's q4_0).
"""

from __future__ import annotations

import torch

from llmkit.errors import ConfigError

SCHEMES = ("int8", "int4")
GROUP_SIZES = (32, 64, 128)


def check_scheme(scheme: str, group_size: int, width: int | None = None, where: str = "") -> None:
    """One-line errors for an unknown scheme or a group size that does not divide ``width``."""
    if scheme not in SCHEMES:
        raise ConfigError(f"--scheme {scheme!r} is not a quantization scheme; use one of {', '.join(SCHEMES)}")
    if scheme == "int4" and group_size not in GROUP_SIZES:
        raise ConfigError(f"--group-size {group_size}: use one of {', '.join(map(str, GROUP_SIZES))}")
    if scheme == "int4" and width is not None and width % group_size:
        raise ConfigError(
            f"--group-size {group_size} does not divide the width {width} of {where or 'a weight'}; "
            f"pick a group size that divides every layer's input width"
        )


def int8_scales(w: torch.Tensor) -> torch.Tensor:
    """(N,) fp16 scales of an (N, K) weight, one per row."""
    return (w.abs().amax(dim=1).float() / 127).clamp(min=1e-8).half()


def int4_scales(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N, K / group_size) fp16 scales of an (N, K) weight, one per group of inputs."""
    N, K = w.shape
    groups = w.float().view(N, K // group_size, group_size)  # (N, G, g)
    return (groups.abs().amax(dim=-1) / 7.5).clamp(min=1e-8).half()


def quantize_with(w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """int8 (N, K) codes of ``w`` on the grid of ``scales`` ((N,) for int8, (N, G) for int4)."""
    N, K = w.shape
    if scales.dim() == 1:
        return torch.round(w.float() / scales.float()[:, None]).clamp(-127, 127).to(torch.int8)
    g = K // scales.size(1)
    q = torch.round(w.float().view(N, -1, g) / scales.float()[..., None])  # (N, G, g)
    return q.clamp(-8, 7).to(torch.int8).view(N, K)


def dequantize(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """fp32 (N, K) weights from int8 codes (N, K) and their scales."""
    N, K = q.shape
    if scales.dim() == 1:
        return q.float() * scales.float()[:, None]
    g = K // scales.size(1)
    return (q.float().view(N, -1, g) * scales.float()[..., None]).view(N, K)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """uint8 (N, K / 2) from int4 codes (N, K) in [-8, 7]: even inputs in the low nibble."""
    u = (q.to(torch.int16) + 8).to(torch.uint8)  # (N, K) in [0, 15]
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """int8 (N, K) codes in [-8, 7] from uint8 (N, K / 2)."""
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack((low, high), dim=-1).flatten(1)  # (N, K / 2, 2) -> (N, K)
