"""Matmul kernels for quantized weights: ``y = x @ dequantize(weight).T + bias``.

Each kernel turns the stored codes into the layout it wants once (``prepare``) and multiplies
many times (``run``). The candidates are PyTorch's own CPU kernels and a dequantising matmul of
ours; ``benchmarks/bench_quant.py`` times them on every projection shape of the benchmarked models
(torchao's kernels beside them), and :data:`DEFAULT` keeps the fastest (docs/BENCHMARKS.md,
"Quantization"):

* ``int8-pack`` — ``aten._weight_int8pack_mm``: int8 weights, one fp32 scale per row, fp32 input.
* ``int4-pack`` — ``aten._weight_int4pack_mm_for_cpu`` on weights converted by
  ``aten._convert_weight_to_int4pack_for_cpu`` (scale and zero per group; our zero is 0).
* ``int4-dyn`` — ``aten._dyn_quant_matmul_4bit``: also quantizes the *input* to int8 per row
  (KleidiAI on Arm; a reference path elsewhere), so it adds error of its own.
* ``dequant`` — ours: dequantize to the input's dtype, then ``F.linear`` (any device, any dtype).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmkit.quant.formats import dequantize, unpack_int4


@dataclass(frozen=True)
class Kernel:
    name: str
    scheme: str
    prepare: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple]
    """(codes (N, K) int8, scales fp16, bias) -> the state ``run`` needs."""
    run: Callable[[torch.Tensor, tuple], torch.Tensor]
    """(x (M, K) fp32, state) -> y (M, N)."""


def _dequant_prepare(q, scales, bias):
    return q, scales.float(), bias


def _dequant_run(x, state):
    q, scales, bias = state
    return F.linear(x, dequantize(q, scales).to(x.dtype), bias)


def _int8_prepare(q, scales, bias):
    return q.contiguous(), scales.float(), bias


def _int8_run(x, state):
    q, scales, bias = state
    y = torch.ops.aten._weight_int8pack_mm(x, q, scales)  # (M, N)
    return y if bias is None else y + bias


def _int4_pack_prepare(q, scales, bias):
    K = q.size(1)
    g = K // scales.size(1)
    u = (q.to(torch.int32) + 8).contiguous()  # (N, K) in [0, 15]
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u, 2)
    # w = (u - 8) * scale + zero per group, as (G, N, 2) [scale, zero]
    s = scales.float().t()  # (G, N)
    scales_and_zeros = torch.stack((s, torch.zeros_like(s)), dim=-1).contiguous()
    return packed, g, scales_and_zeros, bias


def _int4_pack_run(x, state):
    packed, g, scales_and_zeros, bias = state
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, g, scales_and_zeros)  # (M, N)
    return y if bias is None else y + bias


def _int4_dyn_prepare(q, scales, bias):
    N, K = q.shape
    g = K // scales.size(1)
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    nibbles = u[:, 0::2] | (u[:, 1::2] << 4)  # (N, K / 2)
    packed = torch.ops.aten._dyn_quant_pack_4bit_weight(nibbles, scales.float().contiguous(), bias, g, K, N)
    return packed, g, K, N


def _int4_dyn_run(x, state):
    packed, g, K, N = state
    return torch.ops.aten._dyn_quant_matmul_4bit(x, packed, g, K, N)


KERNELS = {
    k.name: k
    for k in (
        Kernel("int8-pack", "int8", _int8_prepare, _int8_run),
        Kernel("int4-pack", "int4", _int4_pack_prepare, _int4_pack_run),
        Kernel("int4-dyn", "int4", _int4_dyn_prepare, _int4_dyn_run),
        Kernel("dequant", "any", _dequant_prepare, _dequant_run),
    )
}

DEFAULT = {"int8": "dequant", "int4": "dequant"}
"""The fastest CPU kernel per scheme (docs/BENCHMARKS.md, "Quantization"): on an AVX2 CPU without
AVX-512/VNNI, PyTorch's packed int8/int4 kernels ran at 0.02-0.4x of fp32 and the dequantising
matmul at 0.2-0.9x, fastest in 38 of the 40 (shape, rows) cases of both models; the packed ones
are kept by name (``QuantLinear.kernel_name``) for CPUs they were written for."""


def kernel_for(scheme: str, device: torch.device, name: str | None = None) -> Kernel:
    """The kernel ``name`` (default: the fastest for ``scheme``); ``dequant`` off the CPU."""
    if device.type != "cpu":
        return KERNELS["dequant"]
    return KERNELS[name or DEFAULT[scheme]]


def codes(stored: torch.Tensor, scheme: str) -> torch.Tensor:
    """int8 (N, K) codes from the stored weight (int8 as is, int4 unpacked from nibbles)."""
    return stored if scheme == "int8" else unpack_int4(stored)
