"""Symmetric powers of a spherical function on a grid: the many-body product of the
``grid`` backend.

A feature ``x`` with C channels of natural-parity irreps (0e, 1o, 2e, ...) is a function
per channel, ``f_c = sum_l w_in[c, l] x_c,l`` (one weight per degree and channel). Its
products with itself are pointwise powers on the grid, so correlation order nu costs nu-1
multiplications of grid values instead of a chain of tensor products:

    out_c = sum_{k=1..nu} w_out[k, c, l3] * P_l3[ f_c^k ]

Grid: Gauss–Legendre x uniform, exact for degree ``nu * L_in + L_out``. Weight layout
``weight.view(N, n_in + nu * n_out, C)``: ``w_in`` first, then ``w_out`` for k = 1..nu.
"""

from __future__ import annotations

import math

import torch

from mlip.errors import KernelInputError

from ..irreps import as_irreps, from_channels, gather_index, split_channels
from ..sphere import gauss_legendre_grid, sh_values
from .base import Constants, check_chunk_size, chunk_size_for, in_chunks, run_in_chunks

__all__ = ["SymmetricPower"]


class SymmetricPower(Constants):
    """``out = sum_k w_out[k] * P(f^k)``, ``f`` the weighted function of ``x``; see module doc.

    Shapes: ``x [N, irreps_in.dim]``, ``weight [N, weight_numel]`` or ``[weight_numel]``;
    returns ``[N, irreps_out.dim]``.

    ``chunk_size``: samples per chunk on CPU, as for :class:`~mlip.kernels.TensorProduct`
    (``None``: automatic, the grid values ``[C, P]`` of a chunk near ``CHUNK_FLOATS``
    numbers; ``0``: never chunk). The powers are bound by memory traffic, so cache-sized
    chunks run several times faster than one pass over all samples (``benchmarks/tp.py
    --power``).
    """

    def __init__(self, irreps_in, irreps_out, correlation: int, *, resolution: tuple[int, int] | None = None,
                 chunk_size: int | None = None):
        super().__init__()
        check_chunk_size(chunk_size)
        self.irreps_in = as_irreps(irreps_in, "irreps_in")
        self.irreps_out = as_irreps(irreps_out, "irreps_out")
        C, irs_in = split_channels(self.irreps_in, "irreps_in")
        _, irs_out = split_channels(self.irreps_out, "irreps_out", channels=C)
        for name, irs in (("irreps_in", irs_in), ("irreps_out", irs_out)):
            bad = [str(ir) for ir in irs if ir.p != (-1) ** ir.l]
            if bad:
                raise KernelInputError(
                    f"{name}: SymmetricPower needs natural-parity irreps (0e, 1o, 2e, ...), got {bad}")
            if len({ir.l for ir in irs}) != len(irs):
                raise KernelInputError(f"{name}: degrees must be distinct, got {[str(i) for i in irs]}")
        if int(correlation) < 1:
            raise KernelInputError(f"correlation must be >= 1, got {correlation}")
        self.correlation = int(correlation)
        self.channels, self.irs_in, self.irs_out = C, irs_in, irs_out
        L_in, L_out = max(ir.l for ir in irs_in), max(ir.l for ir in irs_out)
        total = self.correlation * L_in + L_out
        self.resolution = tuple(resolution) if resolution is not None else (math.ceil((total + 1) / 2), total + 1)
        pts, w = gauss_legendre_grid(*self.resolution)
        self.chunk_size = chunk_size_for(C * len(pts)) if chunk_size is None else chunk_size
        self.weight_numel = C * (len(irs_in) + self.correlation * len(irs_out))
        self.add_const("cols", gather_index(irs_in, C).reshape(-1))  # [N, C*d] -> [N, C, d] columns
        self.add_const("E", sh_values([ir.l for ir in irs_in], pts).T.copy())
        self.add_const("P", sh_values([ir.l for ir in irs_out], pts) * w[:, None])
        self.add_const("deg_in", torch.cat([torch.full((ir.dim,), i) for i, ir in enumerate(irs_in)]))
        self.add_const("deg_out", torch.cat([torch.full((ir.dim,), i) for i, ir in enumerate(irs_out)]))

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.irreps_in.dim:
            raise KernelInputError(f"x: expected shape [N, {self.irreps_in.dim}], got {tuple(x.shape)}")
        if weight.dim() == 1:
            weight = weight.unsqueeze(0)
        if weight.shape[-1] != self.weight_numel or weight.shape[0] not in (1, x.shape[0]):
            raise KernelInputError(
                f"weight: expected shape [{x.shape[0]}, {self.weight_numel}] or [{self.weight_numel}], "
                f"got {tuple(weight.shape)}")
        if in_chunks(x, self.chunk_size):
            return run_in_chunks(self._powers, (x,), weight, self.chunk_size)
        return self._powers(x, weight)

    def _powers(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        C = self.channels
        n_in, n_out = len(self.irs_in), len(self.irs_out)
        w = weight.view(weight.shape[0], -1, C).transpose(1, 2)  # [N|1, C, n_in + nu n_out]
        xc = x.index_select(1, self.const("cols", x)).view(x.shape[0], C, -1)  # channel layout [N, C, d]
        xc = xc * w[:, :, :n_in].index_select(2, self.const("deg_in", x))
        f = xc @ self.const("E", x)  # [N, C, P]
        P = self.const("P", x)
        deg_out = self.const("deg_out", x)
        out = None
        fk = f
        for k in range(self.correlation):
            if k:
                fk = fk * f
            wk = w[:, :, n_in + k * n_out : n_in + (k + 1) * n_out].index_select(2, deg_out)
            term = (fk @ P) * wk
            out = term if out is None else out + term
        return from_channels(out, self.irs_out)
