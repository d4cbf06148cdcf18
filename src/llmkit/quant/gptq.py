"""GPTQ (Frantar et al., 2022): quantize a weight column by column, pushing each column's rounding
error onto the columns not yet quantized, weighted by the inverse Hessian of the layer's inputs.

Round-to-nearest minimizes each weight's own error; GPTQ minimizes the error of the layer's
*outputs* on calibration inputs ``X``: ``||W X - Q X||^2``, whose Hessian is ``H = 2 X X^T``.
The result has exactly the format of round-to-nearest (the same grid, fp16 scales per group), so
everything downstream (kernels, files, GGUF) is shared.
"""

from __future__ import annotations

import torch

from llmkit.quant.formats import int4_scales, int8_scales, quantize_with


class HessianAccumulator:
    """Running ``X^T X / n`` over a layer's inputs (K, K), fed by a forward hook."""

    def __init__(self, width: int):
        self.H = torch.zeros(width, width, dtype=torch.float64)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.size(-1)).double().cpu()  # (rows, K)
        total = self.n + x.size(0)
        self.H.mul_(self.n / total).add_(x.T @ x, alpha=1 / total)
        self.n = total


def gptq_quantize(
    w: torch.Tensor, H: torch.Tensor, scheme: str, group_size: int, block: int = 128, damp: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes (N, K) and fp16 scales of ``w`` (N, K) chosen by GPTQ for inputs with Hessian ``H``.

    Scales of a group are computed from the (already error-updated) columns when the group is
    reached, as in the reference implementation; ``damp`` (fraction of the mean diagonal) keeps the
    Cholesky factorisation stable; inputs that never fire (zero diagonal) are pinned to zero.
    """
    W = w.detach().double().clone()  # (N, K)
    N, K = W.shape
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.diag(H).mean() * torch.eye(K, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)  # (K, K)

    per_channel = scheme == "int8"
    scales = int8_scales(W) if per_channel else torch.empty(N, K // group_size, dtype=torch.float16)
    Q = torch.zeros(N, K, dtype=torch.int8)
    for start in range(0, K, block):
        end = min(start + block, K)
        Wb = W[:, start:end].clone()  # (N, b)
        Err = torch.zeros_like(Wb)
        Hb = Hinv[start:end, start:end]
        for i in range(end - start):
            col = start + i
            if not per_channel and col % group_size == 0:
                # this group's scale, from the columns as GPTQ has updated them so far
                group = Wb[:, i : i + group_size]  # within the block: blocks are multiples of groups
                scales[:, col // group_size] = int4_scales(group.float(), group_size)[:, 0]
            s = scales.double() if per_channel else scales[:, col // group_size].double()
            q = quantize_with(Wb[:, i : i + 1].float(), s.float().half() if per_channel else s.half()[:, None])
            Q[:, col] = q[:, 0]
            err = (Wb[:, i] - q[:, 0].double() * s) / Hb[i, i]  # (N,)
            Wb[:, i:] -= err[:, None] * Hb[i, i:][None, :]
            Err[:, i] = err
        W[:, end:] -= Err @ Hinv[start:end, end:]
    return Q, scales
