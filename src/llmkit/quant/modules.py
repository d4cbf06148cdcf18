"""Quantized stand-ins for ``nn.Linear`` and ``nn.Embedding`` inside the one Transformer.

A :class:`QuantLinear` holds its weight as codes and fp16 scales (buffers, so ``state_dict`` saves
them) and multiplies through a kernel from :mod:`llmkit.quant.kernels`. The engine's fast path
(``model.inference.prepare_for_inference``) fuses projections that read the same input; a
quantized projection fuses itself through :meth:`QuantLinear.fuse`: the rows of q/k/v (and of
gate/up) are concatenated, which is exact because every scale belongs to one output row.
A tied embedding (:class:`QuantEmbedding`) shares the LM head's codes and dequantizes the rows it
looks up.
"""

from __future__ import annotations

import torch
from torch import nn

from llmkit.quant.formats import dequantize, int4_scales, int8_scales, pack_int4, quantize_with
from llmkit.quant.kernels import Kernel, codes, kernel_for


class QuantLinear(nn.Module):
    """``y = x @ (scales * codes).T + bias`` with the codes stored in 8 or 4 bits (inference only)."""

    def __init__(self, in_features: int, out_features: int, scheme: str, group_size: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.scheme, self.group_size = scheme, group_size
        width = in_features if scheme == "int8" else in_features // 2
        scales = (out_features,) if scheme == "int8" else (out_features, in_features // group_size)
        dtype = torch.int8 if scheme == "int8" else torch.uint8
        self.register_buffer("qweight", torch.zeros(out_features, width, dtype=dtype))  # (N, K) or (N, K/2)
        self.register_buffer("scales", torch.ones(scales, dtype=torch.float16))  # (N,) or (N, K/g)
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.kernel_name: str | None = None  # None: the fastest for the scheme (kernels.DEFAULT)
        self._prepared: tuple[Kernel, int, tuple] | None = None  # kernel, qweight's data_ptr, state

    @classmethod
    def from_codes(cls, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, scheme: str, group_size: int):
        """A layer holding int8 codes ``q`` (N, K) and their fp16 ``scales``."""
        N, K = q.shape
        layer = cls(K, N, scheme, group_size, bias is not None)
        layer.qweight = q.contiguous() if scheme == "int8" else pack_int4(q)
        layer.scales = scales.half().contiguous()
        if bias is not None:
            layer.bias = bias.detach().float().clone()
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Module, scheme: str, group_size: int) -> QuantLinear:
        """Round-to-nearest quantization of ``linear.weight``."""
        w = linear.weight.detach()
        scales = int8_scales(w) if scheme == "int8" else int4_scales(w, group_size)
        return cls.from_codes(quantize_with(w, scales), scales, getattr(linear, "bias", None), scheme, group_size)

    def codes(self) -> torch.Tensor:
        """int8 (N, K) codes."""
        return codes(self.qweight, self.scheme)

    def dequantized(self) -> torch.Tensor:
        """The fp32 (N, K) weight this layer computes with."""
        return dequantize(self.codes(), self.scales)

    def _state(self) -> tuple[Kernel, tuple]:
        ptr = self.qweight.data_ptr()
        if self._prepared is None or self._prepared[1] != ptr:
            kernel = kernel_for(self.scheme, self.qweight.device, self.kernel_name)
            with torch.inference_mode(False), torch.no_grad():
                self._prepared = (kernel, ptr, kernel.prepare(self.codes(), self.scales, self.bias))
        return self._prepared[0], self._prepared[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, state = self._state()
        y = kernel.run(x.reshape(-1, self.in_features).float(), state)  # (M, N)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)

    @staticmethod
    def fuse(layers: list[QuantLinear], pack: bool = True) -> FusedQuantLinear:
        """One layer computing ``cat([layer(x) for layer in layers], -1)``."""
        return FusedQuantLinear(layers)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, scheme={self.scheme}, group_size={self.group_size}"


class FusedQuantLinear:
    """Projections that read the same input, as one :class:`QuantLinear` (what the engine's fast
    path calls). Built from the layers' codes; usable while they have not been replaced."""

    def __init__(self, layers: list[QuantLinear]):
        self._owners = layers
        self._ptrs = [layer.qweight.data_ptr() for layer in layers]
        first = layers[0]
        bias = None
        if first.bias is not None:
            bias = torch.cat([layer.bias for layer in layers])
        q = torch.cat([layer.codes() for layer in layers]) if len(layers) > 1 else first.codes()
        scales = torch.cat([layer.scales for layer in layers])
        self.layer = QuantLinear.from_codes(q, scales, bias, first.scheme, first.group_size)
        self.layer.kernel_name = first.kernel_name
        self.weight = self.layer.qweight  # what model.inference.current() checks

    def ready(self) -> bool:
        return all(layer.qweight.data_ptr() == p for layer, p in zip(self._owners, self._ptrs, strict=True))

    def release_dense(self) -> None:
        """Nothing to release: the codes are the only copy that matters (the owners' are small)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class QuantEmbedding(nn.Module):
    """Token embeddings looked up from quantized rows (one scale per row for int8, per group for
    int4); with tied embeddings it holds the LM head's own buffers, not a copy."""

    def __init__(self, head: QuantLinear):
        super().__init__()
        self.scheme = head.scheme
        self.register_buffer("qweight", head.qweight)  # the same tensors as the head's (tied)
        self.register_buffer("scales", head.scales)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, scheme: str, group_size: int) -> QuantEmbedding:
        return cls(QuantLinear.from_linear(embedding, scheme, group_size))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        rows = codes(self.qweight[flat], self.scheme)  # (n, C)
        return dequantize(rows, self.scales[flat]).view(*ids.shape, -1)  # (..., C) fp32
