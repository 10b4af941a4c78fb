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

Grid orientation. The polar axis of the grid is e3nn's y axis (``gauss_legendre_grid(...,
polar="y")``): about it, component ``k`` of a degree-l block is even under the mirror of the
axis for even ``k`` and odd for odd ``k``, so each irrep's even and odd components are two
strided row blocks. The orientation changes nothing at an exact resolution (the quadrature is
exact whatever the axis); at a coarse one it sets where the aliasing error falls (the bound
above holds for any axis).

Execution. With one function product (one parity class pair, no scalar input: the natural
parity irreps of a potential) the product runs on half the grid (:class:`_HalfGridProduct`):
the grid and the quadrature are symmetric under the mirror and every harmonic is even or odd
under it, so each transform is a GEMM of half the size, with the numbers of the full grid
up to rounding, at every resolution. The forward reads the caller's rows in place, one
strided block per (irrep, parity), fused with the weight multiply, and writes its output the
same way. Its backward is written out and recomputes the grid values of each chunk (memory of
the inputs and the output only; storing the values instead was measured no faster: the
product is bound by memory traffic). On CPU the chunks of a multiplicity-major call run
inside one autograd node (:meth:`GridBackend.forward_chunked`: outputs and gradients go
straight into their rows, no concatenation) and their temporaries live in per-thread scratch
buffers (about 2 MB each at the default chunk size; at most ``SCRATCH_MAX_NUMEL`` numbers each
are kept). Where derivatives of the gradient will be taken (:func:`~mlip.kernels.tp.base.second_order`:
a potential trained on forces) the half-grid product runs as autograd ops instead, whose graph
serves the second derivative (the written-out backward would recompute the product: a
training step of a grid model went 79 -> 69 ms on a 45-atom batch). Other cases take the full grid with autograd ops
(:class:`~mlip.kernels.tp.product.SphericalProductBackend`). Timings: ``benchmarks/README.md``.
"""

from __future__ import annotations

import functools
import math
import numbers
import threading

import numpy as np
import torch

from mlip.errors import ConfigError

from ..sphere import gauss_legendre_grid, mirror_signs, sh_values
from .base import grads_by_recompute, grads_in_chunks, rows_of, run_in_chunks, second_order_expected, spans
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
    side (x1, x2 or the output). The grid's polar axis is e3nn's y, about which component
    ``k`` of a degree-l block (``m = k - l``) is even under the mirror for even ``k`` and odd
    for odd ``k``. The permuted order: the even components of every irrep (in irrep order),
    then the odd ones. ``blocks``: one ``(irrep i, weight row, first component s, count,
    first permuted row)`` per (irrep, parity) with components: the permuted rows
    ``[r, r + count)`` are the block's components ``s, s + 2, ...``, a strided view."""

    def __init__(self, irs, y_half: np.ndarray, signs: np.ndarray, offset: int):
        dims = [ir.dim for ir in irs]
        offs = np.cumsum([0] + dims)
        want = np.concatenate([np.where(np.arange(d) % 2 == 0, 1.0, -1.0) for d in dims])
        if not np.array_equal(signs, want):
            raise RuntimeError("grid: harmonics whose mirror parity is not that of their index (polar axis y)")
        self.blocks, self.perm = [], []
        for s in (0, 1):
            for i, d in enumerate(dims):
                comps = list(range(s, d, 2))
                if comps:
                    self.blocks.append((i, offset + i, s, len(comps), len(self.perm)))
                    self.perm += [int(offs[i]) + k for k in comps]
        self.n_even = sum(1 for d in dims for _ in range(0, d, 2))
        self.rep = [wrow for _, wrow, _, k, _ in self.blocks for _ in range(k)]  # weight row per permuted row
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
    def forward(ctx, impl, rows, chunk, x1, x2, weight):
        ctx.impl, ctx.rows, ctx.chunk = impl, rows, chunk
        ctx.spans = spans(x1.shape[1] if rows else x1.shape[0], chunk)
        if len(ctx.spans) == 1:
            y, yu = impl._half_forward(rows, x1, x2, weight, keep=True)
            yus = [yu]
        else:  # chunks of a multiplicity-major product, written straight into one output
            y = x1.new_empty(x1.shape[0], impl.spec.irreps_out.dim)
            yus = [impl._half_forward(rows, x1[a:b], x2[a:b], rows_of(weight, a, b), keep=True, out=y[a:b])[1]
                   for a, b in ctx.spans]
        ctx.save_for_backward(x1, x2, weight, *yus)
        return y

    @staticmethod
    def backward(ctx, gy):
        x1, x2, weight, *yus = ctx.saved_tensors
        impl, rows, ranges = ctx.impl, ctx.rows, ctx.spans
        need = ctx.needs_input_grad[3:]
        if torch.is_grad_enabled():  # create_graph: derivatives of the gradient are wanted
            def ref(a1, a2, aw):  # multiplicity-major chunks: the default chunk loop (split + cat)
                one = functools.partial(impl._half_reference, rows)
                return one(a1, a2, aw) if len(ranges) == 1 else run_in_chunks(one, (a1, a2), aw, ctx.chunk)
            return (None, None, None, *grads_by_recompute(ref, (x1, x2, weight), gy, need))
        gy = gy.contiguous()
        if len(ranges) == 1:
            return (None, None, None, *impl._half_backward(rows, x1, x2, weight, yus[0], gy, need))

        # chunks: each one's gradients go straight into their rows of the whole gradients
        def step(i, a, b, out):
            return impl._half_backward(rows, x1[a:b], x2[a:b], rows_of(weight, a, b), yus[i], gy[a:b], need, out=out)

        return (None, None, None, *grads_in_chunks(step, ranges, x1, x2, weight, need))


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
        pts, w = gauss_legendre_grid(*res, polar="y")
        self.points, self.quadrature = pts, w  # the grid (polar axis e3nn's y) and its weights
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
            north = slice((n_lat // 2) * n_lon, None)  # rings with polar coordinate >= 0 (leggauss sorts ascending)
            halves = []
            for key, y, irs, off in (("1", y1, s.irs1, 0), ("2", y2, s.irs2, n1), ("3", y3, s.irs3, n1 + n2)):
                h = _HalfGrid(irs, y[north], mirror_signs(y, n_lat, n_lon), off)
                if n_lat % 2:
                    h.values[:n_lon, h.n_even :] = 0.0  # odd harmonics vanish on the equator
                halves.append(h)
                # permuted rows <-> component rows, and the weight row of each permuted row
                self.add_const("hperm" + key, torch.tensor(h.perm))
                self.add_const("hinv" + key, torch.tensor(h.inv))
                self.add_const("hrep" + key, torch.tensor(h.rep))
                # multiplicity-major [N, C*d] -> [N, d*C] in the permuted order: column of
                # (permuted component j, channel c) is cols[j * C + c]; the inverse for the way back
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
            self._half = dict(zip("123", halves))

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
        if second_order_expected():  # autograd ops: their graph serves the second derivative
            return self._half_reference(False, x1, x2, weight)
        return _HalfGridProduct.apply(self, False, 0, x1, x2, weight)

    def forward_chunked(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
        """On the half-grid route the chunks run inside one autograd node: outputs and
        gradients are written into their rows of one tensor (no concatenation, forward or
        backward)."""
        if self._half is None or second_order_expected():
            return super().forward_chunked(x1, x2, weight, k)
        return _HalfGridProduct.apply(self, False, k, x1, x2, weight)

    def forward_rows(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Stacked rows ``[D, N, C]`` are ``[D, N*C]`` matrices: every transform is one GEMM
        with the ``N*C`` axis long (see :class:`_HalfGridProduct`)."""
        if not self.supports_rows:
            raise RuntimeError("grid: forward_rows needs channelwise mode and one parity class pair")
        if self.scalar_side is not None:
            return self._forward_scalar_rows(x1, x2, weight)
        if second_order_expected():
            return self._half_reference(True, x1, x2, weight)
        return _HalfGridProduct.apply(self, True, 0, x1, x2, weight)

    # the reflection-symmetric route (see _HalfGridProduct) ------------------------------------
    # Inside, each side is a stack of permuted rows [d, N, C] (even components first); X, the
    # inputs times their weights in that order viewed as [d, N*C], is the GEMM operand; the
    # values a, b, the products E, O and their gradients are [Ph, N*C]. The forward reads and
    # writes the caller's stacked rows in place, one strided block per (irrep, parity),
    # fused with the weight multiply; a multiplicity-major tensor goes through one column
    # gather into the permuted order ([N, d*C], whose transposed view has contiguous C-long
    # runs). The backward materialises permuted rows and expanded weights instead (below).

    def _plan(self, key):
        return {"1": self.plan1, "2": self.plan2, "3": self.plan3}[key]

    def _blocks(self, rows, key, x, ws=None):
        """The caller's components of one side in the permuted order, one ``[k, N, C]`` view
        per block of :attr:`_HalfGrid.blocks` (``x`` stacked rows or multiplicity-major)."""
        if rows:
            v = self._plan(key).block_views(x, True)
            return [v[i][s::2] for i, _, s, _, _ in self._half[key].blocks]
        return self._perm_blocks(key, self._gathered(key, x, ws))

    def _gathered(self, key, x, ws):
        """Multiplicity-major ``x [N, C*d]`` as permuted rows ``[d, N, C]`` (a strided view of
        one column gather, into scratch when ``ws``)."""
        cols = self.const("cols" + key, x)
        d = len(self._half[key].perm)
        n = x.shape[0]
        out = None if ws is None else ws("xg" + key, (n, cols.shape[0]))
        return torch.index_select(x, 1, cols, out=out).view(n, d, -1).transpose(0, 1)

    def _to_perm(self, rows, key, x, ws):
        """The caller's tensor as permuted rows ``[d, N, C]`` in scratch: contiguous from
        stacked rows; from multiplicity-major, the transposed view of one column gather (its
        C-long runs are contiguous, which the element-wise products read at full speed)."""
        if rows:
            idx = self.const("hperm" + key, x)
            return torch.index_select(x, 0, idx, out=ws("xp" + key, (idx.shape[0],) + x.shape[1:]))
        return self._gathered(key, x, ws)

    def _from_perm(self, rows, key, t, out=None):
        """Permuted rows ``[d, N, C]`` back to the caller's layout (a new tensor, or ``out``)."""
        if rows:
            return torch.index_select(t, 0, self.const("hinv" + key, t), out=out)
        n = t.shape[1]
        return torch.index_select(t.transpose(0, 1).reshape(n, -1), 1, self.const("icols" + key, t), out=out)

    def _times_weights(self, key, srcs, dsts, wv) -> None:
        """``dsts[b] = srcs[b] * weight of block b's irrep`` for each block of one side (one
        ``[k, N, C]`` view per block on either side: the caller's blocks or permuted rows)."""
        for (_, wrow, _, _, _), src, dst in zip(self._half[key].blocks, srcs, dsts):
            torch.mul(src, wv[:, wrow], out=dst)

    def _perm_blocks(self, key, t):
        """Permuted rows ``t [d, N, C]`` cut into the blocks of one side (views)."""
        return [t[r : r + k] for _, _, _, k, r in self._half[key].blocks]

    def _values(self, key, X, ws):
        """Values ``a, b [Ph, N*C]`` on the north half of ``X [d, N*C]``."""
        He, Ho = self.const(f"H{key}e", X), self.const(f"H{key}o", X)
        de, ph = He.shape[1], He.shape[0]
        a = torch.mm(He, X[:de], out=ws("a" + key, (ph, X.shape[1])))
        return a, torch.mm(Ho, X[de:], out=ws("b" + key, (ph, X.shape[1])))

    def _half_reference(self, rows, x1, x2, weight):
        """The product with autograd ops only (for derivatives of the gradient)."""
        wv = weight.view(weight.shape[0], -1, self.spec.channels)
        vals = []
        for key, x, plan in (("1", x1, self.plan1), ("2", x2, self.plan2)):
            src = self._blocks(True, key, x if rows else plan.stack(x))
            X = torch.cat([b * wv[:, wrow] for (_, wrow, _, _, _), b in zip(self._half[key].blocks, src)])
            de = self.const(f"H{key}e", x).shape[1]
            X = X.flatten(1)
            vals.append((self.const(f"H{key}e", x) @ X[:de], self.const(f"H{key}o", x) @ X[de:]))
        (a1, b1), (a2, b2) = vals
        Q3e, Q3o = self.const("Q3e", a1), self.const("Q3o", a1)
        yu = torch.cat([Q3e.t() @ (a1 * a2 + b1 * b2), Q3o.t() @ (a1 * b2 + b1 * a2)])
        yu = yu.view(yu.shape[0], -1, self.spec.channels)
        y = torch.cat([yu[r : r + k] * wv[:, wrow] for _, wrow, _, k, r in self._half["3"].blocks])
        y = y.index_select(0, self.const("hinv3", y))  # permuted rows -> component rows
        return y if rows else self.plan3.unstack(y)

    def _half_forward(self, rows, x1, x2, weight, keep, out=None):
        """``y`` and (``keep``) the unweighted permuted output ``yu [D3, N*C]``; no autograd
        (on CPU the intermediates live in a per-thread workspace)."""
        ws = _workspace(x1)
        C = self.spec.channels
        wv = weight.view(weight.shape[0], -1, C)
        vals = []
        for key, x in (("1", x1), ("2", x2)):
            src = self._blocks(rows, key, x, ws)
            d, n = len(self._half[key].perm), src[0].shape[1]
            X = ws("X" + key, (d, n, C))
            self._times_weights(key, src, self._perm_blocks(key, X), wv)
            vals.append(self._values(key, X.view(d, n * C), ws))
        (a1, b1), (a2, b2) = vals
        O = torch.mul(a1, b2, out=ws("O", a1.shape)).addcmul_(b1, a2)
        E = a1.mul_(a2).addcmul_(b1, b2)
        Q3e, Q3o = self.const("Q3e", E), self.const("Q3o", E)
        d3e, d3, nC = Q3e.shape[1], self.spec.d3, E.shape[1]
        yu = E.new_empty(d3, nC) if keep else ws("yu", (d3, nC))
        torch.mm(Q3e.t(), E, out=yu[:d3e])
        torch.mm(Q3o.t(), O, out=yu[d3e:])
        if rows:  # straight into the caller's rows
            y = x1.new_empty(d3, n, C)
            dst = self._blocks(True, "3", y)
        else:  # permuted, multiplicity-major columns [N, d3*C], then one column gather
            yp = ws("yp", (n, d3, C))
            dst = self._perm_blocks("3", yp.transpose(0, 1))
        self._times_weights("3", self._perm_blocks("3", yu.view(d3, n, C)), dst, wv)
        if not rows:
            y = torch.index_select(yp.view(n, -1), 1, self.const("icols3", yp), out=out)
        return y, (yu if keep else None)

    def _half_backward(self, rows, x1, x2, weight, yu, gy, need, out=(None, None, None)):
        """Gradients of :meth:`_half_forward` (no autograd; ``need`` masks x1, x2, weight).

        Unlike the forward, the backward materialises each side's permuted rows ``xp`` and
        expanded weights ``wp`` (one ``index_select`` each): both serve twice (the recomputed
        values and a gradient), and a few whole-array operations beat one small multiply per
        (irrep, parity) block here (measured: 2-3x fewer operator calls per chunk)."""
        ws = _workspace(x1)
        C = self.spec.channels
        d3, nC = yu.shape
        n = nC // C
        wt = weight.view(weight.shape[0], -1, C).transpose(0, 1)  # [n1 + n2 + n3, N|1, C]

        def weights(key):  # the weight of each permuted row: [d, N|1, C]
            rep = self.const("hrep" + key, weight)
            return torch.index_select(wt, 0, rep, out=ws("w" + key, (rep.shape[0],) + wt.shape[1:]))

        side = {}
        for key, x in (("1", x1), ("2", x2)):
            xp, wp = self._to_perm(rows, key, x, ws), weights(key)
            X = torch.mul(xp, wp, out=ws("X" + key, (xp.shape[0], n, C))).view(-1, nC)
            side[key] = (xp, wp, *self._values(key, X, ws))
        (x1p, w1p, a1, b1), (x2p, w2p, a2, b2) = side["1"], side["2"]
        gyp = self._to_perm(rows, "3", gy, ws)
        gyw = torch.mul(gyp, weights("3"), out=ws("gyw", (d3, n, C))).view(d3, nC)
        Q3e, Q3o = self.const("Q3e", a1), self.const("Q3o", a1)
        d3e = Q3e.shape[1]
        gE = torch.mm(Q3e, gyw[:d3e], out=ws("gE", a1.shape))
        gO = torch.mm(Q3o, gyw[d3e:], out=ws("gO", a1.shape))
        gX = {}
        for key, (a, b) in (("1", (a2, b2)), ("2", (a1, b1))):
            if not (need[int(key) - 1] or need[2]):
                continue
            # d/d(a) of E = a a' + b b', O = a b' + b a' is gE a' + gO b'; d/d(b): gE b' + gO a'
            ga = torch.mul(gE, a, out=ws("ga", a.shape)).addcmul_(gO, b)
            gb = torch.mul(gE, b, out=ws("gb", a.shape)).addcmul_(gO, a)
            He, Ho = self.const(f"H{key}e", a), self.const(f"H{key}o", a)
            de, d = He.shape[1], He.shape[1] + Ho.shape[1]
            g = ws("gX" + key, (d, nC))
            torch.mm(He.t(), ga, out=g[:de])
            torch.mm(Ho.t(), gb, out=g[de:])
            gX[key] = g.view(d, n, C)
        grads = [None, None, None]
        for j, (key, xp, wp) in enumerate((("1", x1p, w1p), ("2", x2p, w2p))):
            if need[j]:
                g = torch.mul(gX[key], wp, out=ws("t", gX[key].shape))
                g = g.sum(2, keepdim=True) if xp.shape[2] < C else g
                grads[j] = self._from_perm(rows, key, g, out[j])  # a new tensor or out
        if need[2]:
            # dL/dw of an irrep: the sum over its components of gradient x input
            gw = ws("gw", (wt.shape[0], n, C)).zero_()  # scratch: the result below is a new tensor
            for key, G, xp in (("1", gX.get("1"), x1p), ("2", gX.get("2"), x2p), ("3", gyp, yu.view(d3, n, C))):
                gw.index_add_(0, self.const("hrep" + key, yu), torch.mul(G, xp, out=ws("t", G.shape)))
            gw = gw.sum(1, keepdim=True) if weight.shape[0] == 1 else gw
            # a new tensor (or out) in the weight layout [N|1, n1 + n2 + n3, C]
            dst = weight.new_empty(weight.shape) if out[2] is None else out[2]
            grads[2] = dst.view(gw.shape[1], gw.shape[0], C).copy_(gw.transpose(0, 1)).view(weight.shape)
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
