"""Low-rank global mixing of 2-D fields (LordNet).

Huang et al., "LordNet: An Efficient Neural Network for Learning to Solve
Parametric Partial Differential Equations without Simulated Data" (2022).

A dense linear map on an ``H x W`` field costs ``(HW)^2`` parameters.  LordNet
restricts it to a sum of ``r`` separable (Kronecker) terms,
``vec(Y) = sum_r (W1_r kron W2_r) vec(X)``, applied as
``Y = sum_r W1_r X W2_r^T`` at cost ``O(r HW (H + W))``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LowRankMixing"]


class LowRankMixing(nn.Module):
    """``Y[b, c] = sum_r W1[r] @ X[b, c] @ W2[r]^T``: ``(B, C, H, W) -> (B, C, H, W)``.

    The same mixing acts on every channel (channel mixing is left to pointwise
    layers, as in LordNet).  With row-major flattening
    ``Y.flatten(-2) = X.flatten(-2) @ (sum_r kron(W1[r], W2[r]))^T``, see
    :meth:`kronecker`.

    Args:
        height, width: ``H`` and ``W``.
        rank: number of separable terms ``r``.
        dtype: may be complex (e.g. to hold DFT matrices).
    """

    def __init__(
        self,
        height: int,
        width: int,
        rank: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.height, self.width, self.rank = height, width, rank
        # Variance 1/(r H W) per entry keeps the output variance equal to the input's.
        s1 = 1.0 / math.sqrt(height * math.sqrt(rank))
        s2 = 1.0 / math.sqrt(width * math.sqrt(rank))
        self.w1 = nn.Parameter(s1 * torch.randn(rank, height, height, dtype=dtype, device=device))
        self.w2 = nn.Parameter(s2 * torch.randn(rank, width, width, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.height, self.width):
            raise ValueError(f"expected (..., {self.height}, {self.width}), got {tuple(x.shape)}")
        return torch.einsum("rij,...jk,rlk->...il", self.w1, x.to(self.w1.dtype), self.w2)

    def kronecker(self) -> torch.Tensor:
        """The equivalent dense ``(H W, H W)`` matrix ``sum_r kron(W1[r], W2[r])``."""
        return sum(torch.kron(self.w1[r], self.w2[r]) for r in range(self.rank))
