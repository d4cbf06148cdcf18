"""A preallocated key/value cache with one row per sequence and per-row lengths.

Layout: ``k[layer]`` and ``v[layer]`` are (B_max, K, S_max, D) tensors allocated once. Row ``b``
holds its tokens in slots ``0 .. length_b - 1`` and the token in slot ``s`` has RoPE position
``s``, so rows of different lengths share a batch without padding tokens in the cache: a row's
stale slots beyond its length are never attended to, because the attention mask only admits
keys at positions <= the query's position.

The engine *binds* the cache before each forward (which rows, at which start slots, how many new
tokens); attention then calls :meth:`update` once per layer, which writes the new keys in place
and returns views (no copies) of the slots to attend to.

:class:`Int8KVCache` stores the same layout in int8 with one scale per (row, head, slot): about a
quarter of the fp32 cache's bytes (half of bf16's) for long contexts and large batches, at a
measured quality cost (docs/BENCHMARKS.md, "int8 KV cache").
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        n_layers: int,
        max_batch: int,
        max_len: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ):
        self._dtype = dtype
        self._allocate(n_layers, (max_batch, n_kv_heads, max_len, head_dim), device)
        self._rows = slice(0, 0)
        self._start: int | None = 0  # one start slot shared by all bound rows, or None
        self._slots: torch.Tensor | None = None  # (n, T) per-row write slots when starts differ
        self._row_idx: torch.Tensor | None = None  # (n, 1)
        self._end = 0  # attend to slots [0, end)

    def _allocate(self, n_layers: int, shape: tuple[int, int, int, int], device) -> None:
        self.k = [torch.zeros(shape, dtype=self._dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=self._dtype, device=device) for _ in range(n_layers)]

    @staticmethod
    def for_model(model, max_batch: int, max_len: int, kind: str = "auto") -> KVCache:
        """A cache shaped for ``model``, on its device. ``kind`` "int8" gives an
        :class:`Int8KVCache`; "auto" a cache in the weights' dtype, except on CPU with bf16/fp16
        weights: there it is fp32, because CPU attention kernels are several times slower in bf16
        than in fp32 (docs/BENCHMARKS.md), at twice the cache memory."""
        if kind not in KV_CACHE_KINDS:
            raise ValueError(f"unknown KV cache kind {kind!r}; choose one of {', '.join(KV_CACHE_KINDS)}")
        c = model.config
        p = next(model.parameters())
        dtype = torch.float32 if p.device.type == "cpu" and p.dtype in (torch.bfloat16, torch.float16) else p.dtype
        cls = Int8KVCache if kind == "int8" else KVCache
        return cls(c.num_hidden_layers, max_batch, max_len, c.num_key_value_heads, c.head_dim, dtype, p.device)

    def like(self, max_batch: int, max_len: int) -> KVCache:
        """An empty cache of the same kind, layers, heads and dtype (the prefix cache's store)."""
        k = self.k[0]
        return type(self)(len(self.k), max_batch, max_len, k.size(1), k.size(3), self.dtype, k.device)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype :meth:`update` returns keys and values in."""
        return self._dtype

    def tensors(self) -> list[torch.Tensor]:
        """Every stored tensor, each laid out (B_max, K, S_max, ...), for row and slot moves."""
        return [t for per_layer in self._lists() for t in per_layer]

    @property
    def max_batch(self) -> int:
        return self.k[0].size(0)

    @property
    def max_len(self) -> int:
        return self.k[0].size(2)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def bind(self, rows: slice, starts: list[int], n_new: int) -> None:
        """Next forward writes ``n_new`` tokens for cache rows ``rows`` at slots ``starts[i] ..``."""
        self._rows = rows
        self._end = max(starts) + n_new
        if all(s == starts[0] for s in starts):
            self._start, self._slots = starts[0], None
        else:
            dev = self.k[0].device
            st = torch.tensor(starts, device=dev)
            self._start = None
            self._slots = st[:, None] + torch.arange(n_new, device=dev)  # (n, T)
            self._row_idx = torch.arange(len(starts), device=dev)[:, None]  # (n, 1)

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (n, K, T, D) in place; return (n, K, S, D) views of everything to attend to."""
        kc = self.k[layer_idx][self._rows]  # (n, K, S_max, D) view
        vc = self.v[layer_idx][self._rows]
        if self._start is not None:
            s, T = self._start, k.size(2)
            kc[:, :, s : s + T].copy_(k)
            vc[:, :, s : s + T].copy_(v)
        else:
            kc[self._row_idx, :, self._slots] = k.transpose(1, 2).to(kc.dtype)  # (n, T, K, D) into per-row slots
            vc[self._row_idx, :, self._slots] = v.transpose(1, 2).to(vc.dtype)
        return kc[:, :, : self._end], vc[:, :, : self._end]

    def copy_row(self, src: int, dst: int, length: int) -> None:
        """Duplicate the first ``length`` slots of row ``src`` into row ``dst`` (prefix sharing,
        compaction)."""
        for t in self.tensors():
            t[dst, :, :length].copy_(t[src, :, :length])

    def reorder(self, rows: slice, index: torch.Tensor, length: int) -> None:
        """Rows ``rows`` take the contents of rows ``rows.start + index`` (beam search)."""
        for t in self.tensors():
            block = t[rows, :, :length]
            block.copy_(block.index_select(0, index))

    def grow(self, max_batch: int, max_len: int) -> None:
        """Reallocate to at least (max_batch, max_len), keeping the contents."""
        self.resize(max(max_batch, self.max_batch), max(max_len, self.max_len))

    def resize(self, max_batch: int, max_len: int) -> None:
        """Reallocate to exactly (max_batch, max_len), keeping the rows and slots that fit."""
        B, S = max_batch, max_len
        if (self.max_batch, self.max_len) == (B, S):
            return
        b, s = min(B, self.max_batch), min(S, self.max_len)
        for lst in self._lists():
            for i, t in enumerate(lst):
                new = t.new_zeros((B, t.size(1), S, t.size(3)))
                new[:b, :, :s] = t[:b, :, :s]
                lst[i] = new

    def _lists(self) -> list[list[torch.Tensor]]:
        return [self.k, self.v]


KV_CACHE_KINDS = ("auto", "int8")


class Int8KVCache(KVCache):
    """Keys and values stored as int8, symmetric, one fp32 scale per (row, head, slot).

    Each new key/value vector of ``head_dim`` numbers is quantized on write (scale = its largest
    magnitude / 127); :meth:`update` returns the attended slots dequantized to the compute dtype,
    so attention itself is unchanged. Per-slot scales mean a token's error never depends on the
    tokens beside it, and rows and slots move (copy_row, reorder, resize, the prefix cache)
    exactly as in the full-precision cache. Bytes per stored number: 1 + 4 / head_dim.
    """

    def _allocate(self, n_layers: int, shape: tuple[int, int, int, int], device) -> None:
        scale_shape = (*shape[:3], 1)
        self.k = [torch.zeros(shape, dtype=torch.int8, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=torch.int8, device=device) for _ in range(n_layers)]
        self.k_scale = [torch.zeros(scale_shape, dtype=torch.float32, device=device) for _ in range(n_layers)]
        self.v_scale = [torch.zeros(scale_shape, dtype=torch.float32, device=device) for _ in range(n_layers)]

    def _lists(self) -> list[list[torch.Tensor]]:
        return [self.k, self.v, self.k_scale, self.v_scale]

    @staticmethod
    def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (..., D) -> int8 (..., D) and fp32 scales (..., 1) with x ~= q * scale."""
        scale = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / 127.0  # (..., 1)
        q = torch.round(x.float() / scale).clamp_(-127, 127).to(torch.int8)  # (..., D)
        return q, scale

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize and write k, v (n, K, T, D); return (n, K, S, D) dequantized copies to attend to."""
        rows = self._rows
        out = []
        for store, scales, x in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
            qc = store[layer_idx][rows]  # (n, K, S_max, D) int8 view
            sc = scales[layer_idx][rows]  # (n, K, S_max, 1) fp32 view
            q, scale = self.quantize(x)  # (n, K, T, D), (n, K, T, 1)
            if self._start is not None:
                s, T = self._start, x.size(2)
                qc[:, :, s : s + T].copy_(q)
                sc[:, :, s : s + T].copy_(scale)
            else:
                qc[self._row_idx, :, self._slots] = q.transpose(1, 2)  # (n, T, K, D) into per-row slots
                sc[self._row_idx, :, self._slots] = scale.transpose(1, 2)
            end = self._end
            out.append((qc[:, :, :end].to(torch.float32) * sc[:, :, :end]).to(self._dtype))  # (n, K, S, D)
        return out[0], out[1]
