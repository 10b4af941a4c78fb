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
  is zero unless K - l3 < l3). ``tests/kernels/test_tp_gaunt_grid.py`` checks it.

Execution. With one function product (one parity class pair, no scalar input: the natural
parity irreps of a potential) the product runs on half the grid (:class:`_HalfGridProduct`):
the grid and the quadrature are symmetric under z -> -z and every harmonic is even or odd
under it, so each transform is a GEMM of half the size, with the numbers of the full grid
up to rounding, at every resolution. Its backward is written out and recomputes the grid
values of each chunk (memory of the inputs and the output only); on CPU its temporaries live
in per-thread scratch buffers (about 2 MB each at the default chunk size; at most
``SCRATCH_MAX_NUMEL`` numbers each are kept). Other cases take the full grid with autograd ops
(:class:`~mlip.kernels.tp.product.SphericalProductBackend`). Timings: ``benchmarks/README.md``.
"""

from __future__ import annotations

import math
import numbers
import threading

import numpy as np
import torch

from mlip.errors import ConfigError

from ..sphere import gauss_legendre_grid, mirror_signs, sh_values
from .product import SphericalProductBackend

__all__ = ["GridBackend", "exact_resolution"]


#: per-thread scratch buffers of the half-grid route on CPU: slot -> flat tensor, grown as needed
_SCRATCH = threading.local()
#: buffers above this many elements are not kept between calls
SCRATCH_MAX_NUMEL = 1 << 22


def _workspace(like: torch.Tensor):
    """``ws(slot, shape)``: an uninitialised buffer of ``like``'s dtype. On CPU, the same memory
    is handed out for a slot on every call in this thread (a chunk's temporaries then stay in
    the allocator's hands instead of being mapped, faulted in and unmapped per chunk);
    elsewhere, a new tensor."""
    if like.device.type != "cpu":
        return lambda slot, shape: like.new_empty(shape)
    store = getattr(_SCRATCH, "buffers", None)
    if store is None:
        store = _SCRATCH.buffers = {}

    def ws(slot, shape):
        numel = math.prod(shape)
        if numel > SCRATCH_MAX_NUMEL:
            return like.new_empty(shape)
        key = (slot, like.dtype)
        buf = store.get(key)
        if buf is None or buf.numel() < numel:
            buf = store[key] = like.new_empty(numel)
        return buf[:numel].view(shape)

    return ws


class _HalfGrid:
    """Constants of the reflection-symmetric route (see :class:`_HalfGridProduct`) for one
    side: the component order (even components first), the grid values on the northern half."""

    def __init__(self, irs, y_half: np.ndarray, signs: np.ndarray, offset: int):
        even = [j for j in range(len(signs)) if signs[j] > 0]
        odd = [j for j in range(len(signs)) if signs[j] < 0]
        self.perm = even + odd
        self.n_even = len(even)
        irrep = [offset + i for i, ir in enumerate(irs) for _ in range(ir.dim)]
        self.rep = [irrep[j] for j in self.perm]  # weight row (irrep) of each permuted component
        self.inv = np.argsort(self.perm).tolist()
        self.values = y_half[:, self.perm]  # [Ph, d]: even columns, then odd


class _HalfGridProduct(torch.autograd.Function):
    """The Gaunt product on the northern half of the grid, on stacked rows.

    The grid is symmetric under z -> -z (Gauss–Legendre nodes come in pairs +-z, same
    longitudes) and each harmonic is even or odd under it. With ``a``/``b`` the values of the
    even/odd components of f1 on the northern half (``A2``/``B2`` for f2), f1 is ``a + b`` on
    the north and ``a - b`` on the mirrored south, so the products on both halves are
    ``E = a a2 + b b2`` (their mean) and ``O = a b2 + b a2`` (half their difference), and the
    projection onto even (odd) output components needs only ``E`` (``O``). Every transform is a
    GEMM of half the size of the full grid's; the quadrature is the same, so the numbers are
    those of the full grid up to rounding. Forward and backward are written out; a
    second-order derivative (``create_graph``) recomputes the product with autograd ops.
    """

    @staticmethod
    def forward(ctx, impl, rows, x1, x2, weight):
        ctx.impl, ctx.rows = impl, rows
        y, yu = impl._half_forward(rows, x1, x2, weight, keep=True)
        ctx.save_for_backward(x1, x2, weight, yu)
        return y

    @staticmethod
    def backward(ctx, gy):
        x1, x2, weight, yu = ctx.saved_tensors
        impl, rows = ctx.impl, ctx.rows
        need = ctx.needs_input_grad[2:]
        if torch.is_grad_enabled():  # create_graph: derivatives of the gradient are wanted
            # fresh nodes (views) stand for the inputs, so that each gradient is the partial
            # derivative along this product only (x1 may itself depend on x2, e.g. in a
            # potential's second layer), while it stays differentiable in the inputs
            with torch.enable_grad():
                a1, a2, aw = (t.view_as(t) for t in (x1, x2, weight))
                y = impl._half_reference(rows, a1, a2, aw)
            ins = [t for t, k in zip((a1, a2, aw), need) if k]
            gs = iter(torch.autograd.grad(y, ins, gy, create_graph=True))
            return (None, None, *(next(gs) if k else None for k in need))
        return (None, None, *impl._half_backward(rows, x1, x2, weight, yu, gy.contiguous(), need))


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
        n1, n2 = len(s.irs1), len(s.irs2)
        # the reflection-symmetric route (one function product: no parity masks, no scalar side)
        self._half = None
        if self.scalar_side is None and len(self.class_pairs) == 1:
            n_lat, n_lon = res
            north = slice((n_lat // 2) * n_lon, None)  # rings with z >= 0 (leggauss sorts ascending)
            halves = []
            for key, y, irs, off in (("1", y1, s.irs1, 0), ("2", y2, s.irs2, n1), ("3", y3, s.irs3, n1 + n2)):
                h = _HalfGrid(irs, y[north], mirror_signs(y, n_lat, n_lon), off)
                if n_lat % 2:
                    h.values[:n_lon, h.n_even :] = 0.0  # odd harmonics vanish on the equator
                halves.append(h)
                self.add_const("hperm" + key, torch.tensor(h.perm))
                self.add_const("hrep" + key, torch.tensor(h.rep))
                self.add_const("hinv" + key, torch.tensor(h.inv))
                # multiplicity-major layout [N, C*d]: column of (permuted component j, channel c)
                # is cols[j * C + c]; the inverse for the way back
                chans = s.channels2 if key == "2" else s.channels
                offs = np.cumsum([0] + [ir.dim for ir in irs])
                where = [(i, k) for i, ir in enumerate(irs) for k in range(ir.dim)]
                cols = [chans * offs[where[j][0]] + c * irs[where[j][0]].dim + where[j][1]
                        for j in h.perm for c in range(chans)]
                self.add_const("cols" + key, torch.tensor(cols))
                self.add_const("icols" + key, torch.tensor(np.argsort(cols)))
                if key == "3":
                    # quadrature of the north half, doubled (each ring stands for its mirror too);
                    # a ring on the equator is its own mirror: its weight stays single
                    wh = 2.0 * w[north]
                    if n_lat % 2:
                        wh[:n_lon] *= 0.5
                    q = h.values * wh[:, None]
                    self.add_const("Q3e", q[:, : h.n_even].copy())  # [Ph, d3e]
                    self.add_const("Q3o", q[:, h.n_even :].copy())
                else:
                    self.add_const(f"H{key}e", h.values[:, : h.n_even].copy())  # [Ph, de]
                    self.add_const(f"H{key}o", h.values[:, h.n_even :].copy())
            self._half = halves

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

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self._half is None:
            return super().forward(x1, x2, weight)
        return _HalfGridProduct.apply(self, False, x1, x2, weight)

    def forward_rows(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Stacked rows ``[D, N, C]`` are ``[D, N*C]`` matrices: every transform is one GEMM
        with the ``N*C`` axis long (see :class:`_HalfGridProduct`)."""
        if not self.supports_rows:
            raise RuntimeError("grid: forward_rows needs channelwise mode and one parity class pair")
        if self.scalar_side is not None:
            return self._forward_scalar_rows(x1, x2, weight)
        return _HalfGridProduct.apply(self, True, x1, x2, weight)

    # the reflection-symmetric route (see _HalfGridProduct) ------------------------------------
    # Inside, each side is a permuted stack of rows xp [d, N, C] (even components first); X =
    # xp * weights viewed as [d, N*C] is the GEMM operand, the values a, b, the products E, O
    # and their gradients are [Ph, N*C]. Inputs in stacked rows are permuted with one
    # index_select; multiplicity-major ones [N, C*d] are gathered into the permuted order
    # ([N, d*C]) and transposed in C-long blocks.

    def _to_perm(self, rows, key, x, ws=None):
        """An input (rows or multiplicity-major) as permuted rows ``[d, N, C|1]``."""
        if rows:
            idx = self.const("hperm" + key, x)
            return x.index_select(0, idx) if ws is None else torch.index_select(x, 0, idx, out=ws("xp" + key, x.shape))
        n, cols = x.shape[0], self.const("cols" + key, x)
        d = self.const("hperm" + key, x).shape[0]
        if ws is None:
            return x.index_select(1, cols).view(n, d, -1).transpose(0, 1).contiguous()
        g = torch.index_select(x, 1, cols, out=ws("xg" + key, (n, cols.shape[0]))).view(n, d, -1)
        return ws("xp" + key, (d, n, g.shape[2])).copy_(g.transpose(0, 1))

    def _from_perm(self, rows, key, t):
        """Permuted rows ``[d, N, C]`` back to the caller's layout (a new tensor)."""
        if rows:
            return t.index_select(0, self.const("hinv" + key, t))
        n = t.shape[1]
        return t.transpose(0, 1).reshape(n, -1).index_select(1, self.const("icols" + key, t))

    def _perm_weights(self, key, weight, ws=None):
        """Weights per permuted row of one side: ``[d, N|1, C]``."""
        w = weight.view(weight.shape[0], -1, self.spec.channels).transpose(0, 1)
        rep = self.const("hrep" + key, weight)
        if ws is None:
            return w.index_select(0, rep)
        return torch.index_select(w, 0, rep, out=ws("wp" + key, (rep.shape[0],) + w.shape[1:]))

    def _half_reference(self, rows, x1, x2, weight):
        """The product with autograd ops only (for derivatives of the gradient)."""
        vals = []
        for key, x in (("1", x1), ("2", x2)):
            xp = self._to_perm(rows, key, x)
            X = (xp * self._perm_weights(key, weight)).flatten(1)
            de = self.const(f"H{key}e", x).shape[1]
            vals.append((self.const(f"H{key}e", x) @ X[:de], self.const(f"H{key}o", x) @ X[de:]))
        (a1, b1), (a2, b2) = vals
        Q3e, Q3o = self.const("Q3e", a1), self.const("Q3o", a1)
        yu = torch.cat([Q3e.t() @ (a1 * a2 + b1 * b2), Q3o.t() @ (a1 * b2 + b1 * a2)])
        w3p = self._perm_weights("3", weight)
        return self._from_perm(rows, "3", yu.view(yu.shape[0], -1, w3p.shape[2]) * w3p)

    def _half_values(self, key, xp, weight, ws):
        """``X = xp * weights [d, N*C]`` and its values ``a, b [Ph, N*C]`` on the north half."""
        wp = self._perm_weights(key, weight, ws)
        d, n, C = xp.shape[0], xp.shape[1], wp.shape[2]
        X = torch.mul(xp, wp, out=ws("X" + key, (d, n, C))).view(d, n * C)
        He, Ho = self.const(f"H{key}e", X), self.const(f"H{key}o", X)
        de, ph = He.shape[1], He.shape[0]
        a = torch.mm(He, X[:de], out=ws("a" + key, (ph, n * C)))
        return wp, a, torch.mm(Ho, X[de:], out=ws("b" + key, (ph, n * C)))

    def _half_forward(self, rows, x1, x2, weight, keep):
        """``y`` and (``keep``) the unweighted permuted output ``yu [D3, N*C]``; no autograd
        (on CPU the intermediates live in a per-thread workspace)."""
        ws = _workspace(x1)
        x1p, x2p = self._to_perm(rows, "1", x1, ws), self._to_perm(rows, "2", x2, ws)
        n, C = x1p.shape[1], self.spec.channels
        _, a1, b1 = self._half_values("1", x1p, weight, ws)
        _, a2, b2 = self._half_values("2", x2p, weight, ws)
        O = torch.mul(a1, b2, out=ws("O", a1.shape)).addcmul_(b1, a2)
        E = a1.mul_(a2).addcmul_(b1, b2)
        Q3e, Q3o = self.const("Q3e", E), self.const("Q3o", E)
        d3e, d3 = Q3e.shape[1], self.spec.d3
        yu = E.new_empty(d3, n * C) if keep else ws("yu", (d3, n * C))
        torch.mm(Q3e.t(), E, out=yu[:d3e])
        torch.mm(Q3o.t(), O, out=yu[d3e:])
        w3p = self._perm_weights("3", weight, ws)
        y = torch.mul(yu.view(d3, n, C), w3p, out=ws("yw", (d3, n, C)))
        return self._from_perm(rows, "3", y), (yu if keep else None)

    def _half_backward(self, rows, x1, x2, weight, yu, gy, need):
        """Gradients of :meth:`_half_forward` (no autograd; ``need`` masks x1, x2, weight)."""
        ws = _workspace(x1)
        x1p, x2p = self._to_perm(rows, "1", x1, ws), self._to_perm(rows, "2", x2, ws)
        gyp = self._to_perm(rows, "3", gy, ws)
        d3, n, C = gyp.shape[0], gyp.shape[1], self.spec.channels
        w1p, a1, b1 = self._half_values("1", x1p, weight, ws)
        w2p, a2, b2 = self._half_values("2", x2p, weight, ws)
        w3p = self._perm_weights("3", weight, ws)
        gyw = torch.mul(gyp, w3p, out=ws("gyw", (d3, n, C))).view(d3, n * C)
        Q3e, Q3o = self.const("Q3e", a1), self.const("Q3o", a1)
        d3e = Q3e.shape[1]
        gE = torch.mm(Q3e, gyw[:d3e], out=ws("gE", a1.shape))
        gO = torch.mm(Q3o, gyw[d3e:], out=ws("gO", a1.shape))
        gX = []
        for key, (a, b) in (("1", (a2, b2)), ("2", (a1, b1))):
            # d/d(a) of E = a a' + b b', O = a b' + b a' is gE a' + gO b'; d/d(b): gE b' + gO a'
            ga = torch.mul(gE, a, out=ws("ga", a.shape)).addcmul_(gO, b)
            gb = torch.mul(gE, b, out=ws("gb", a.shape)).addcmul_(gO, a)
            He, Ho = self.const(f"H{key}e", a), self.const(f"H{key}o", a)
            de, d = He.shape[1], He.shape[1] + Ho.shape[1]
            g = ws("gX" + key, (d, n * C))
            torch.mm(He.t(), ga, out=g[:de])
            torch.mm(Ho.t(), gb, out=g[de:])
            gX.append(g.view(d, n, C))
        gX1, gX2 = gX
        grads = [None, None, None]
        if need[0]:
            grads[0] = self._from_perm(rows, "1", torch.mul(gX1, w1p, out=ws("t1", gX1.shape)))
        if need[1]:
            g2 = torch.mul(gX2, w2p, out=ws("t2", gX2.shape))
            grads[1] = self._from_perm(rows, "2", g2.sum(2, keepdim=True) if x2p.shape[2] < C else g2)
        if need[2]:
            gw = ws("gw", (len(self.spec.irs1) + len(self.spec.irs2) + len(self.spec.irs3), n, C)).zero_()
            gw.index_add_(0, self.const("hrep1", yu), torch.mul(gX1, x1p, out=ws("t1", gX1.shape)))
            gw.index_add_(0, self.const("hrep2", yu), torch.mul(gX2, x2p, out=ws("t2", gX2.shape)))
            gw.index_add_(0, self.const("hrep3", yu), torch.mul(gyp, yu.view(d3, n, C), out=ws("t1", gyp.shape)))
            # a new tensor in the weight layout [N|1, n1 + n2 + n3, C] (gw is scratch)
            gw = gw.sum(1, keepdim=True) if weight.shape[0] == 1 else gw
            grads[2] = weight.new_empty(gw.shape[1], gw.shape[0], C).copy_(gw.transpose(0, 1)).view(weight.shape)
        return grads

    def transform_flops(self, n: int) -> tuple[int, int]:
        """GEMM flops ``(forward, backward)`` of this product's transforms on ``n`` samples, by
        their shapes on the full grid: x1 ``[n C, d1] -> [n C, P]``, x2 ``[n C2, d2] -> [n C2, P]``
        (``C2 = 1`` in channelwise mode), the projection ``[n C, P] -> [n C, d3]``; the backward
        applies their transposes. A yardstick for the achieved rate (``benchmarks/tp.py``):
        the half-grid route does half of these flops per transform, plus the recomputation of
        the grid values in the backward."""
        s = self.spec
        f = 2 * n * self.num_points * (s.channels * (s.d1 + s.d3) + s.channels2 * s.d2)
        return f, f

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
