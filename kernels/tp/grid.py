"""``grid`` backend: the Gaunt product evaluated on a spherical grid.

Inputs are evaluated on a Gauss–Legendre (in cos theta) x uniform (in phi) grid, multiplied
pointwise, and projected back with the quadrature weights. Weights: see
:mod:`mlip.kernels.tp.product`.

Resolution and exactness. With ``n_lat`` Gauss–Legendre nodes and ``n_lon`` longitudes the
quadrature integrates spherical polynomials of degree up to ``K = min(2 n_lat - 1, n_lon - 1)``
exactly. The default is the smallest exact grid: ``n_lat = ceil((L1+L2+L3+1)/2)``,
``n_lon = L1+L2+L3+1``. A coarser ``resolution=(n_lat, n_lon)`` is allowed for speed; then

* output degrees ``l3 <= K - L1 - L2`` are still exact (to rounding);
* for higher degrees, with ``h = f1 f2`` and ``h_>`` its part of degree > K - l3, the error
  of the degree-l3 block obeys ``||err_l3|| <= sqrt((2 l3 + 1) Q(h_>^2)) + ||P_l3 h_>||``,
  where Q is the grid quadrature (a Cauchy–Schwarz bound on the aliasing; the second term
  is zero unless K - l3 < l3). ``tests/kernels/test_tp_grid.py`` checks it.
"""

from __future__ import annotations

import math
import numbers

import torch

from mlip.errors import ConfigError

from ..sphere import gauss_legendre_grid, sh_values
from .product import SphericalProductBackend

__all__ = ["GridBackend", "exact_resolution"]


def exact_resolution(L1: int, L2: int, L3: int) -> tuple[int, int]:
    """Smallest (n_lat, n_lon) for which the grid product is exact."""
    total = L1 + L2 + L3
    return math.ceil((total + 1) / 2), total + 1


class GridBackend(SphericalProductBackend):
    """Gaunt TP on a spherical grid; option ``resolution=(n_lat, n_lon)`` (default exact)."""

    name = "grid"
    #: the many-body product takes pointwise powers on the grid (no chain of products)
    many_body = "powers"

    def __init__(self, spec, *, resolution: tuple[int, int] | None = None):
        self._resolution = resolution
        super().__init__(spec)

    def _build_transforms(self) -> None:
        exact = exact_resolution(self.L1, self.L2, self.L3)
        r = self._resolution
        try:
            res = exact if r is None else tuple(r)
        except TypeError:  # not a sequence: reported below
            res = ()
        if len(res) != 2 or not all(isinstance(k, numbers.Integral) and k >= 1 for k in res):
            raise ConfigError(f"grid: option resolution must be (n_lat, n_lon) with positive integers, got {r!r}")
        self.resolution = res
        self.exact = res[0] >= exact[0] and res[1] >= exact[1]
        pts, w = gauss_legendre_grid(*res)
        s = self.spec
        y1 = sh_values([ir.l for ir in s.irs1], pts)  # [P, d1]
        y2 = sh_values([ir.l for ir in s.irs2], pts)
        y3 = sh_values([ir.l for ir in s.irs3], pts)
        self.add_const("E1", y1.T.copy())  # [d1, P]
        self.add_const("E2", y2.T.copy())
        self.add_const("P3", (y3 * w[:, None]))  # [P, d3]
        # per-degree values of input 2: E2deg[j, (l2, q)] = E2[j, q] if j has degree index l2
        S2 = self._const64["S2"].numpy()
        self.add_const("E2deg", (S2.T[:, :, None] * y2.T[:, None, :]).reshape(y2.shape[1], -1))
        # weight index (in the [n1 + n2 + n3] irreps of the weight layout) of each component
        # row of input 1 and of the output (forward_rows)
        n1, n2 = len(s.irs1), len(s.irs2)
        self.add_const("rep1", torch.tensor([i for i, ir in enumerate(s.irs1) for _ in range(ir.dim)]))
        self.add_const("rep3", torch.tensor([n1 + n2 + i for i, ir in enumerate(s.irs3) for _ in range(ir.dim)]))

    def _values2(self, x2, w2, mask):
        if self.spec.mode != "channelwise":
            return super()._values2(x2, w2, mask)
        # x2 has one channel: evaluate each degree once per sample, then mix per channel
        x2 = x2.squeeze(1)
        if mask is not None:
            x2 = x2 * mask
        g = (x2 @ self.const("E2deg", x2)).view(x2.shape[0], len(self.spec.irs2), -1)  # [N, n2, P]
        n, C = x2.shape[0], self.spec.channels
        return torch.matmul(w2, g).reshape(n * C, -1) if w2.shape[0] == n else (w2 @ g).reshape(n * C, -1)

    @property
    def supports_rows(self) -> bool:
        # channelwise with natural parity classes on both sides (one function product), or a
        # scalar input; the other cases (masks per parity class) keep the channel layout
        return self.spec.mode == "channelwise" and (self.scalar_side is not None or len(self.class_pairs) == 1)

    def forward_rows(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Stacked rows ``[D, N, C]`` are ``[D, N*C]`` matrices: values on the grid are one
        GEMM ``E1^T x1`` -> ``[P, N, C]``, the projection one GEMM ``P3^T h`` -> ``[D3, N, C]``,
        with no relayout on either side."""
        if not self.supports_rows:
            raise RuntimeError("grid: forward_rows needs channelwise mode and one parity class pair")
        if self.scalar_side is not None:
            return self._forward_scalar_rows(x1, x2, weight)
        s = self.spec
        d1, n, C = x1.shape
        n1, n2 = len(s.irs1), len(s.irs2)
        w = weight.view(weight.shape[0], -1, C)  # [N|1, n1 + n2 + n3, C]
        # per-irrep weights expanded to the rows of their components: [D, N|1, C] views
        x1w = x1 * w.index_select(1, self.const("rep1", w)).transpose(0, 1)
        f1 = (self.const("E1", x1).t() @ x1w.reshape(d1, n * C)).view(-1, n, C)  # [P, N, C]
        # input 2 (one channel): values of each degree once per sample, then mixed per channel
        g = self.const("E2deg", x1).t() @ x2[:, :, 0]  # [n2 * P, N]
        # [N, P, n2], contiguous: bmm copies every batch matrix of a permuted operand
        g = g.view(n2, -1, n).permute(2, 1, 0).contiguous()
        w2 = w[:, n1 : n1 + n2]
        f2 = torch.matmul(g, w2) if w2.shape[0] == n else g @ w2[0]  # [N, P, C]
        h = f1 * f2.transpose(0, 1)
        y = (self.const("P3", x1).t() @ h.reshape(h.shape[0], n * C)).view(-1, n, C)  # [D3, N, C]
        return y * w.index_select(1, self.const("rep3", w)).transpose(0, 1)

    def floats_per_sample(self) -> int:
        return self.spec.channels * self.num_points

    @property
    def num_points(self) -> int:
        return self.resolution[0] * self.resolution[1]

    def _to_values(self, xw, side):
        return xw @ self.const("E" + side, xw)

    def _from_values(self, h):
        return h @ self.const("P3", h)

    # for the many-body product: direct access to values on the grid
    def to_grid(self, xw: torch.Tensor, side: str = "1") -> torch.Tensor:
        """Values ``[..., P]`` of coefficient vectors ``[..., d]`` (input side "1" or "2")."""
        return xw @ self.const("E" + side, xw)

    def from_grid(self, h: torch.Tensor) -> torch.Tensor:
        """Project grid values ``[..., P]`` onto the output harmonics ``[..., d3]``."""
        return h @ self.const("P3", h)
