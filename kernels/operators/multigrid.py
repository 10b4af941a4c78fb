"""Multigrid V-cycle as a neural operator layer (MgNO).

He, Liu, Xu, "MgNO: Efficient Parameterization of Linear Operators via
Multigrid", ICLR 2024.

One V-cycle for ``A u = f`` on a vertex-centred grid of ``2**L - 1`` interior
points per side (zero Dirichlet boundary, i.e. zero padding).  On level ``l``:
pre-smooth ``u <- u + S_l (f - A_l u)``; restrict the residual
``f_{l+1} = R_l (f - A_l u)``; recurse from ``u_{l+1} = 0``; prolongate and
correct ``u <- u + P_l u_{l+1}``; post-smooth.  In MgNO ``A_l``, ``S_l``
(3x3 convolutions), ``R_l`` (stride-2 3x3 convolution) and ``P_l`` (its
transposed counterpart) are learned; :meth:`MultigridVCycle.poisson` sets them
to the classical choices (5-point Laplacian, damped Jacobi, full weighting,
bilinear interpolation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MultigridVCycle", "laplacian_5pt", "damped_jacobi_step"]

_LAPLACE = ((0.0, -1.0, 0.0), (-1.0, 4.0, -1.0), (0.0, -1.0, 0.0))
_FULL_WEIGHTING = ((1.0, 2.0, 1.0), (2.0, 4.0, 2.0), (1.0, 2.0, 1.0))


def laplacian_5pt(u: torch.Tensor, h: float) -> torch.Tensor:
    """Five-point ``-Laplacian`` with zero Dirichlet boundary: ``(B, C, n, n) -> (B, C, n, n)``.

    ``(A u)_ij = (4 u_ij - u_{i+-1,j} - u_{i,j+-1}) / h^2`` with ``u = 0`` outside.
    Its eigenvectors are ``sin(j pi x) sin(k pi y)`` with eigenvalues
    ``(4 / h^2) (sin^2(j pi h / 2) + sin^2(k pi h / 2))``.
    """
    c = u.shape[1]
    w = torch.tensor(_LAPLACE, dtype=u.dtype, device=u.device).expand(c, 1, 3, 3) / h**2
    return F.conv2d(u, w, padding=1, groups=c)


def damped_jacobi_step(u: torch.Tensor, f: torch.Tensor, h: float, omega: float) -> torch.Tensor:
    """One damped-Jacobi sweep for the 5-point Laplacian: ``u + omega h^2 / 4 (f - A u)``.

    Shapes ``(B, C, n, n)``.  On an eigenmode the error is multiplied by
    ``1 - omega * lambda / (4 / h^2)``.
    """
    return u + (omega * h**2 / 4) * (f - laplacian_5pt(u, h))


class MultigridVCycle(nn.Module):
    """One learnable multigrid V-cycle: ``(f, u0) -> u``, shapes ``(B, C, n, n)``, ``n = 2**levels - 1``.

    Args:
        channels: ``C``; all convolutions map ``C -> C`` channels.
        levels: number of grid levels (coarsest grid has ``2**1 - 1 = 1`` point
            per side when the input has ``2**levels - 1``).
        pre_smooth, post_smooth: smoothing steps before / after the coarse correction.
        coarse_smooth: smoothing steps on the coarsest level (no further recursion).

    Attributes ``A``, ``S`` (one ``Conv2d`` each per level), ``R``, ``P`` (one per
    level transition) hold the operator, smoother, restriction and prolongation.
    """

    def __init__(
        self,
        channels: int,
        levels: int,
        *,
        pre_smooth: int = 1,
        post_smooth: int = 1,
        coarse_smooth: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        kw = dict(dtype=dtype, device=device, bias=False)
        self.levels = levels
        self.pre_smooth, self.post_smooth, self.coarse_smooth = pre_smooth, post_smooth, coarse_smooth
        self.A = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, **kw) for _ in range(levels))
        self.S = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, **kw) for _ in range(levels))
        self.R = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, **kw) for _ in range(levels - 1))
        self.P = nn.ModuleList(nn.ConvTranspose2d(channels, channels, 3, stride=2, **kw) for _ in range(levels - 1))

    @classmethod
    def poisson(
        cls,
        levels: int,
        *,
        channels: int = 1,
        omega: float = 0.8,
        pre_smooth: int = 2,
        post_smooth: int = 2,
        coarse_smooth: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> "MultigridVCycle":
        """The classical geometric multigrid for ``-Laplace u = f`` on the unit square.

        ``A_l`` = 5-point Laplacian with ``h_l = 2**l / 2**levels``, ``S_l`` = damped
        Jacobi ``omega h_l^2 / 4``, ``R`` = full weighting, ``P`` = bilinear
        interpolation (``= 4 R^T``); channels do not mix.
        """
        mg = cls(
            channels,
            levels,
            pre_smooth=pre_smooth,
            post_smooth=post_smooth,
            coarse_smooth=coarse_smooth,
            dtype=dtype,
            device=device,
        )
        ref = mg.A[0].weight
        eye = torch.eye(channels, dtype=ref.dtype, device=ref.device)[:, :, None, None]
        lap = torch.tensor(_LAPLACE, dtype=ref.dtype, device=ref.device)
        fw = torch.tensor(_FULL_WEIGHTING, dtype=ref.dtype, device=ref.device)
        centre = torch.zeros(3, 3, dtype=ref.dtype, device=ref.device)
        centre[1, 1] = 1.0
        with torch.no_grad():
            for lvl in range(levels):
                h = 2.0**lvl / 2.0**levels
                mg.A[lvl].weight.copy_(eye * lap / h**2)
                mg.S[lvl].weight.copy_(eye * centre * (omega * h**2 / 4))
            for lvl in range(levels - 1):
                mg.R[lvl].weight.copy_(eye * fw / 16)
                mg.P[lvl].weight.copy_(eye * fw / 4)
        return mg

    def smooth(self, level: int, u: torch.Tensor, f: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """``steps`` times ``u <- u + S_l (f - A_l u)`` on ``level``."""
        for _ in range(steps):
            u = u + self.S[level](f - self.A[level](u))
        return u

    def _cycle(self, level: int, u: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        if level == self.levels - 1:
            return self.smooth(level, u, f, self.coarse_smooth)
        u = self.smooth(level, u, f, self.pre_smooth)
        r = self.R[level](f - self.A[level](u))
        e = self._cycle(level + 1, torch.zeros_like(r), r)
        u = u + self.P[level](e)
        return self.smooth(level, u, f, self.post_smooth)

    def forward(self, f: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        n = f.shape[-1]
        if f.shape[-2] != n or n != 2**self.levels - 1:
            raise ValueError(f"expected an {2**self.levels - 1}x{2**self.levels - 1} grid, got {tuple(f.shape[-2:])}")
        return self._cycle(0, torch.zeros_like(f) if u is None else u, f)
