"""Inference-time weight layouts: fused projections and backend-packed matrices.

A decode step multiplies a few rows by every weight matrix, so its speed is how fast the weights
stream through the best matmul kernel the backend has. :func:`prepare_for_inference` (the engine
calls it) gives each attention block, MLP and the LM head a :class:`FastLinear` per projection
(the model's classes name them in ``FUSED``):

* projections that read the same input are **fused** into one matrix (q/k/v, gate/up), and the
  original parameters become row views of it: same values, no extra memory, and training still
  updates them in place (the fused matrix sees every update);
* on CPU the matmul runs through **oneDNN** (``torch.ops.mkldnn._linear_pointwise``) on a copy of
  each matrix **reordered into oneDNN's blocked layout** (``pack``): 1.3-3.7x faster than
  ``F.linear`` for the 1-16 rows of a decode step. The copy is rebuilt automatically when
  training changes its source parameters in place; an inference-only model (``release_dense``,
  what the CLI loads) frees the original instead, so the weights are held once.

docs/BENCHMARKS.md has the measurements behind each choice. The fast path runs only with autograd
off (gradients must reach the parameters themselves), and only while the parameters still live in
the storage it was built from: ``.to()`` or a reassigned weight turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from llmkit.errors import LLMKitError

PACK_ROWS_HINT = 16
"""Rows per matmul that oneDNN's blocked layout is chosen for (it stays correct for any count)."""


@cache
def onednn_linear_works(dtype: torch.dtype) -> bool:
    """True if oneDNN's linear (dense and packed weights) runs here and agrees with F.linear."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 2, 64, generator=g).to(dtype)  # (B, T, K)
        w = torch.randn(48, 64, generator=g).to(dtype)  # (N, K)
        b = torch.randn(48, generator=g).to(dtype)
        ref = F.linear(x, w, b).float()
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 16)
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        for weight in (w, packed):
            y = torch.ops.mkldnn._linear_pointwise(x, weight, b, "none", [], "")
            if y.shape != ref.shape or not torch.allclose(y.float(), ref, rtol=tol, atol=tol * 8):
                return False
        return True
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


class FastLinear:
    """``x @ weight.T + bias`` through the fastest kernel for the weight's device and dtype.

    ``weight`` (N, K) is contiguous; ``owners`` are the parameters that must still be views of it
    for this object to be usable (:meth:`ready` checks their data pointers, which is cheap).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, owners: list[torch.Tensor], pack: bool):
        self.weight: torch.Tensor | None = weight  # None once released
        self.bias = bias
        self._owners = owners
        self._ptrs = [p.data_ptr() for p in owners]
        # in-place updates (an optimizer step) bump the owners' version counters; the fused
        # matrix has a counter of its own, which updates through the views do not bump.
        # (Parameters made inside torch.inference_mode have no counter: they cannot be trained.)
        self._tracked = [p for p in owners if _has_version_counter(p)]
        self.onednn = weight.device.type == "cpu" and onednn_linear_works(weight.dtype)
        self.packed = None
        self._packed_version = -1
        if pack and self.onednn:
            self._repack()

    def _repack(self) -> None:
        with torch.inference_mode(False), torch.no_grad():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, PACK_ROWS_HINT)
        self._packed_version = sum(p._version for p in self._tracked)

    def release_dense(self) -> None:
        """Free the (N, K) weight, keeping only the packed copy: the owners become empty, so only
        this object can still compute with them (an inference-only model, about half the memory)."""
        if self.packed is None:
            return
        empty = self.weight.new_empty(0)
        for p in self._owners:
            if p.dim() == 2:  # weights; biases stay (they are small and the kernel reads them)
                p.data = empty
        self._ptrs = [p.data_ptr() for p in self._owners]
        self.weight = None

    def ready(self) -> bool:
        """True if the owners still live where this was built; repacks if training changed them."""
        for p, ptr in zip(self._owners, self._ptrs, strict=True):
            if p.data_ptr() != ptr:
                return False
        if (
            self.packed is not None
            and self.weight is not None
            and sum(p._version for p in self._tracked) != self._packed_version
        ):
            self._repack()
        return True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., K) -> (..., N)."""
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def _has_version_counter(t: torch.Tensor) -> bool:
    try:
        return t._version >= 0
    except RuntimeError:
        return False


def fuse_linears(linears: list[nn.Linear], pack: bool) -> FastLinear:
    """One FastLinear computing ``cat([lin(x) for lin in linears], -1)``; each linear's weight
    (and bias) becomes a row view of the fused matrix, so no memory is added."""
    with torch.inference_mode(False), torch.no_grad():
        if len(linears) == 1:
            lin = linears[0]
            if not lin.weight.is_contiguous():
                lin.weight.data = lin.weight.data.contiguous()
            w, b = lin.weight.data, None if lin.bias is None else lin.bias.data
        else:
            w = torch.cat([lin.weight.data for lin in linears])  # (sum N, K)
            b = torch.cat([lin.bias.data for lin in linears]) if linears[0].bias is not None else None
            off = 0
            for lin in linears:
                n = lin.out_features
                lin.weight.data = w[off : off + n]  # (n, K) contiguous view
                if b is not None:
                    lin.bias.data = b[off : off + n]
                off += n
    owners = [lin.weight for lin in linears] + [lin.bias for lin in linears if lin.bias is not None]
    return FastLinear(w, b, owners, pack)


def current(fast: dict[str, FastLinear] | None) -> dict[str, FastLinear] | None:
    """``fast`` if the inference path may use it now (autograd off, weights where they were)."""
    if fast is None:
        return None
    if torch.is_grad_enabled() or not all(f.ready() for f in fast.values()):
        if any(f.weight is None for f in fast.values()):
            raise InferenceOnlyError(
                "this model was loaded for inference only (its weights were packed for "
                "the engine and the trainable copies freed); load it again to train or move it"
            )
        return None
    return fast


class InferenceOnlyError(LLMKitError):
    """A model prepared with ``release_dense=True`` was used for something other than inference."""


def prepare_for_inference(model: nn.Module, pack: bool | None = None, release_dense: bool = False) -> None:
    """Give every module of ``model`` that declares ``FUSED`` projections its fast projections.

    A module class names the linears that read the same input, in output order (the attention
    block: ``{"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",)}``); each group becomes one
    :class:`FastLinear` in the module's ``fast`` dict. ``pack`` (default: on, on CPU) keeps a
    oneDNN-blocked copy of each matrix (faster matmuls, see the module docstring) at the cost of a
    second copy of the weights, unless ``release_dense`` frees the first (then the model can only
    run inference). Idempotent: modules already prepared, whose weights have not moved, are left alone.
    """
    if pack is None:
        pack = next(model.parameters()).device.type == "cpu"
    # a head tied to the input embedding keeps its dense weight: the embedding lookup reads it
    embedded = {m.weight.data_ptr() for m in model.modules() if isinstance(m, nn.Embedding)}
    for mod in model.modules():
        groups = getattr(type(mod), "FUSED", None)
        if not groups:
            continue
        fast = getattr(mod, "fast", None)
        if fast is not None and all(f.ready() for f in fast.values()):
            continue
        linears = {key: [getattr(mod, name) for name in names] for key, names in groups.items()}
        if not all(type(lin) is nn.Linear for group in linears.values() for lin in group):
            mod.fast = None  # a wrapped projection (a LoRA adapter) runs through its own forward
            continue
        tied = any(lin.weight.data_ptr() in embedded for group in linears.values() for lin in group)
        mod.fast = {key: fuse_linears(group, pack) for key, group in linears.items()}
        if release_dense and not tied:
            for f in mod.fast.values():
                f.release_dense()
    if release_dense:
        _return_freed_memory()


def _return_freed_memory() -> None:
    """Hand the freed dense weights back to the OS: glibc keeps freed heap memory for reuse
    otherwise, and the process would look (and stay) twice its size."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
