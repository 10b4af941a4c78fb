"""``cp`` backend: CP (CANDECOMP/PARAFAC) decomposition of the Clebsch–Gordan tensor
(as in tensor decomposition networks, 2025).

All parity-allowed CG paths of one channel, with ``cg``'s normalisation, are stacked into
one tensor ``T [d1, d2, d3]`` and approximated by rank R factors:
``T[i, j, k] ~ sum_r A[i, r] B[j, r] C[k, r]``. The product is then

    out_c = w_c * ((x1_c A) * (x2_(c) B)) C^T          cost O((d1 + d2 + d3) R) per channel

with path-weight sharing: one weight per channel (``weight_numel = C``) scales the whole
product. With all path weights equal to ``w_c``, ``cg`` and a full-rank ``cp`` agree.
Below full rank the product is only approximately equivariant; its error is bounded by
the decomposition error, which :meth:`CPBackend.report` measures.

Factors are deterministic: at ``rank >= full_rank`` (the number of non-zero fibres
``T[i, j, :]``) an exact decomposition is written down; below it, alternating least squares
from a fixed seed. They are cached in the user cache directory (``MLIP_CACHE_DIR`` overrides
it), keyed by irreps, rank and algorithm version, written atomically.

Default rank: ``7 L^2`` (the quadratic schedule of the reference code; L the largest input
degree), capped at the full rank.

Execution: three GEMMs on stacked component-major rows (:meth:`CPBackend.forward_rows`). On
CPU a multiplicity-major call of more samples than the chunk size runs its chunks inside one
autograd node (:class:`_CPChunks`, forward and backward written out, ``u`` and ``v`` kept for
the backward): no split of the inputs and no concatenation of outputs or gradients.
Timings: ``benchmarks/README.md``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from mlip.atomic import atomic_open
from mlip.errors import ConfigError, KernelInputError
from mlip.paths import cache_dir as user_cache_dir

from .base import (
    TPBackend,
    TPSpec,
    grads_by_recompute,
    grads_in_chunks,
    rows_of,
    run_in_chunks,
    second_order_expected,
    spans,
)
from .paths import enumerate_paths, unreachable_outputs

__all__ = ["CPBackend", "cg_tensor", "cp_als", "cache_dir"]

_ALGO = "als-v1"


def cache_dir() -> Path:
    """Where CP factors are cached: ``$MLIP_CACHE_DIR/cp`` or the platform user cache dir."""
    return user_cache_dir("cp")


def cg_tensor(spec: TPSpec) -> np.ndarray:
    """The stacked, normalised CG tensor ``[d1, d2, d3]`` of one channel (float64)."""
    paths = enumerate_paths(spec.irs1, spec.irs2, spec.irs3)
    off = [np.cumsum([0] + [ir.dim for ir in irs]) for irs in (spec.irs1, spec.irs2, spec.irs3)]
    T = np.zeros((spec.d1, spec.d2, spec.d3))
    for p in paths:
        T[off[0][p.i1] : off[0][p.i1 + 1], off[1][p.i2] : off[1][p.i2 + 1], off[2][p.i3] : off[2][p.i3 + 1]] += p.coeff
    return T


def cp_exact(T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact CP factors with one rank-1 term per non-zero fibre ``T[i, j, :]``."""
    ii, jj = np.nonzero(np.abs(T).sum(axis=2) > 0)
    R = len(ii)
    A = np.zeros((T.shape[0], R))
    B = np.zeros((T.shape[1], R))
    A[ii, np.arange(R)] = 1.0
    B[jj, np.arange(R)] = 1.0
    C = T[ii, jj, :].T.copy()
    return A, B, C


def cp_als(T: np.ndarray, rank: int, *, iters: int = 500, seed: int = 0, tol: float = 1e-10):
    """Rank-``rank`` CP factors of ``T`` by alternating least squares from a fixed seed.

    Returns ``(A [d1, R], B [d2, R], C [d3, R])``. Deterministic for a given input.
    """
    rng = np.random.default_rng(seed)
    d1, d2, d3 = T.shape
    A = rng.standard_normal((d1, rank))
    B = rng.standard_normal((d2, rank))
    C = rng.standard_normal((d3, rank))
    # unfoldings, so each MTTKRP is one matrix product with a Khatri–Rao product
    T1 = T.reshape(d1, d2 * d3)
    T2 = T.transpose(1, 0, 2).reshape(d2, d1 * d3)
    T3 = T.transpose(2, 0, 1).reshape(d3, d1 * d2)
    kr = lambda X, Y: (X[:, None, :] * Y[None, :, :]).reshape(-1, rank)  # noqa: E731
    norm2 = float(np.sum(T * T))
    prev = np.inf
    reg = 1e-12 * np.eye(rank)
    for it in range(iters):
        A = np.linalg.solve((B.T @ B) * (C.T @ C) + reg, (T1 @ kr(B, C)).T).T
        B = np.linalg.solve((A.T @ A) * (C.T @ C) + reg, (T2 @ kr(A, C)).T).T
        G = (A.T @ A) * (B.T @ B)
        M = T3 @ kr(A, B)
        C = np.linalg.solve(G + reg, M.T).T
        # balance column norms so that no factor drifts to huge or tiny values
        na, nb, nc = (np.linalg.norm(X, axis=0) + 1e-300 for X in (A, B, C))
        g = np.cbrt(na * nb * nc)
        A, B, C = A * (g / na), B * (g / nb), C * (g / nc)
        if it % 10 == 9:
            # ||T - X||^2 = ||T||^2 - 2 <T, X> + ||X||^2 without forming X
            G = (A.T @ A) * (B.T @ B)
            inner = float(np.sum(C * (T3 @ kr(A, B))))
            err = np.sqrt(max(norm2 - 2 * inner + float(np.sum(G * (C.T @ C))), 0.0) / norm2)
            if prev - err < tol * max(err, 1e-30):
                break
            prev = err
    return A, B, C


def _load_or_compute(spec: TPSpec, rank: int, iters: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    key = f"{_ALGO}|{spec.irs1}|{spec.irs2}|{spec.irs3}|{rank}|{iters}"
    fname = cache_dir() / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".npz")
    if fname.exists():
        try:
            with np.load(fname) as z:
                if str(z["key"]) == key:
                    return z["A"], z["B"], z["C"]
        except Exception:
            pass  # unreadable cache entry: recompute and overwrite
    A, B, C = cp_als(cg_tensor(spec), rank, iters=iters)
    try:
        # a file object, not the temporary's name: np.savez appends ".npz" to names
        with atomic_open(fname, "wb") as f:
            np.savez(f, A=A, B=B, C=C, key=np.array(key))
    except OSError:
        pass  # a read-only cache is not an error: the factors are just not kept
    return A, B, C


class CPBackend(TPBackend):
    """CP-decomposed CG product with one weight per channel. Options: ``rank`` (default
    ``7 L^2`` capped at full rank; ``"full"`` for the exact decomposition), ``iters`` (ALS)."""

    name = "cp"
    exact_options = {"rank": "full"}

    def __init__(self, spec: TPSpec, *, rank: int | str | None = None, iters: int = 500):
        super().__init__(spec)
        paths = enumerate_paths(spec.irs1, spec.irs2, spec.irs3)
        missing = unreachable_outputs(paths, spec.irs3)
        if missing:
            raise KernelInputError(f"irreps_out: no path of {spec.irreps_in1} x {spec.irreps_in2} produces {missing}")
        T = cg_tensor(spec)
        self.full_rank = int((np.abs(T).sum(axis=2) > 0).sum())
        L = max(ir.l for ir in (*spec.irs1, *spec.irs2))
        if rank is None:
            rank = min(self.full_rank, max(1, 7 * L * L))
        elif rank == "full":
            rank = self.full_rank
        if not isinstance(rank, (int, np.integer)) or rank < 1:
            raise ConfigError(f"cp: option rank must be a positive integer or 'full', got {rank!r}")
        if rank >= self.full_rank:
            A, B, C = cp_exact(T)
        else:
            A, B, C = _load_or_compute(spec, int(rank), iters)
        self.rank = A.shape[1]
        self.relative_error = float(np.linalg.norm(np.einsum("ir,jr,kr->ijk", A, B, C) - T) / np.linalg.norm(T))
        self.add_const("A", A)
        self.add_const("B", B)
        self.add_const("Ct", C.T.copy())
        self.weight_numel = spec.channels
        self._equivariance_error = None

    def forward(self, x1, x2, weight):
        # on stacked rows the factors are plain GEMMs over the component axis (two relayouts,
        # as many as the channel layout would need)
        return self.plan3.unstack(self.forward_rows(self.plan1.stack(x1), self.plan2.stack(x2), weight))

    def forward_chunked(self, x1, x2, weight, k):
        """On CPU the chunks run inside one autograd node (:class:`_CPChunks`): each chunk's
        output and gradients are written into their rows, no concatenation. Where derivatives
        of the gradient will be taken (:func:`~mlip.kernels.tp.base.second_order`, training on
        forces), the autograd chunk loop instead: its graph serves the second derivative
        without recomputing the product (measured: the written-out route, which must then
        recompute, is 1.6x slower there)."""
        if second_order_expected():
            return super().forward_chunked(x1, x2, weight, k)
        return _CPChunks.apply(self, k, x1, x2, weight)

    #: the factors act on the component axis, so stacked rows ([D, N*C] matrices) need no relayout
    supports_rows = True

    def forward_rows(self, x1, x2, weight):
        """``x1 [D1, N, C]``, ``x2 [D2, N, C|1]`` -> ``[D3, N, C]``: ``u = A^T x1``, ``v = B^T x2``
        (``[R, N, C|1]``), ``z = C (u * v)``, times the per-channel weight."""
        u, v = self._factors(x1, x2)
        R, n, C = u.shape
        z = self.const("Ct", x1).t() @ (u * v).view(R, n * C)
        return z.view(-1, n, C) * weight

    def _factors(self, X1, X2):
        """``u = A^T X1 [R, n, C]`` and ``v = B^T X2 [R, n, C|1]`` of stacked rows (autograd
        ops: :meth:`forward_rows` and the written-out chunks share them)."""
        n = X1.shape[1]
        u = (self.const("A", X1).t() @ X1.reshape(X1.shape[0], -1)).view(-1, n, X1.shape[2])
        v = (self.const("B", X1).t() @ X2.reshape(X2.shape[0], -1)).view(-1, n, X2.shape[2])
        return u, v

    # the written-out product on one chunk of multiplicity-major samples (no autograd) --------
    def _chunk_forward(self, x1, x2, weight, out, keep: bool):
        """The product of samples ``x1 [n, C*d1]``, ``x2`` written into ``out [n, C*d3]``;
        with ``keep``, returns ``u`` and ``v`` for the backward (else ``None``)."""
        u, v = self._factors(self.plan1.stack_plain(x1), self.plan2.stack_plain(x2))
        n, C = u.shape[1], u.shape[2]
        p = u * v if keep else u.mul_(v)
        z = (self.const("Ct", u).t() @ p.view(u.shape[0], -1)).view(-1, n, C)
        self.plan3.unstack_plain(z.mul_(weight), out)
        return (u, v) if keep else None

    def _chunk_backward(self, u, v, weight, gy, need, out):
        """Gradients of :meth:`_chunk_forward` from its ``u``, ``v`` (``need`` masks x1, x2,
        weight; x1's and x2's are written into ``out[0]``, ``out[1]`` when given, the weight's
        into ``out[2]``). Three GEMMs, as many as the forward: with ``g = Ct^T`` applied to
        the output gradient (before the weight), ``dL/dw = sum_r g u v``, ``dL/du = w g v``,
        ``dL/dv = w g u`` (summed over channels when x2 has one)."""
        R, n, C = u.shape
        g = (self.const("Ct", u) @ self.plan3.stack_plain(gy).view(-1, n * C)).view(R, n, C)
        wb = weight.view(-1, C)  # [n|1, C], broadcast over the rank
        grads = [None, None, None]
        if need[1] or need[2]:
            gu = g * u
            if need[2]:
                gw = (gu * v).sum(0)
                gw = gw.sum(0, keepdim=True) if weight.shape[0] == 1 else gw
                grads[2] = gw if out[2] is None else out[2].copy_(gw)
            if need[1]:
                gv = gu.mul_(wb)
                gv = gv.sum(2, keepdim=True) if v.shape[2] < C else gv
                gx2 = (self.const("B", u) @ gv.view(R, -1)).view(-1, n, v.shape[2])
                grads[1] = self.plan2.unstack_plain(gx2, out[1])
        if need[0]:
            gx = g.mul_(wb).mul_(v).view(R, -1)
            grads[0] = self.plan1.unstack_plain((self.const("A", u) @ gx).view(-1, n, C), out[0])
        return grads

    def floats_per_sample(self) -> int:
        """The largest intermediate per sample is ``u`` (and ``u * v``): ``C R`` numbers, more
        than the features' ``C d`` once the rank exceeds the irreps' dimension (``7 L^2`` does
        at every ``L >= 1``); sized by it, the CPU chunks keep it near ``CHUNK_FLOATS``."""
        s = self.spec
        return s.channels * max(s.d1, s.d2, s.d3, self.rank)

    def transform_flops(self, n: int) -> tuple[int, int]:
        """GEMM flops ``(forward, backward)`` of the three factor products on ``n`` samples, by
        their shapes (``u``, ``v`` and the output; the backward applies their transposes): the
        yardstick of ``benchmarks/tp.py``'s GEMM-rate column."""
        s = self.spec
        f = 2 * n * self.rank * (s.channels * (s.d1 + s.d3) + s.channels2 * s.d2)
        return f, f

    def report(self) -> dict:
        """Rank, relative decomposition error ``||T_cp - T|| / ||T||`` and the equivariance
        error ``||f(D x1, D x2) - D f(x1, x2)|| / ||f(x1, x2)||`` (random inputs and rotation,
        float64, inversion included)."""
        if self._equivariance_error is None:
            from ..testing import equivariance_error

            s = self.spec
            self._equivariance_error = equivariance_error(
                lambda a, b: self(a, b, torch.ones(1, s.channels, dtype=a.dtype)),
                [s.irreps_in1, s.irreps_in2],
                s.irreps_out,
                seed=0,
            )
        return {
            "rank": self.rank,
            "full_rank": self.full_rank,
            "relative_error": self.relative_error,
            "equivariance_error": self._equivariance_error,
        }


class _CPChunks(torch.autograd.Function):
    """cp's product on multiplicity-major samples in chunks inside one autograd node: outputs
    and gradients go straight into their rows (no concatenation, forward or backward).
    Forward and backward are written out (:meth:`CPBackend._chunk_forward`,
    :meth:`CPBackend._chunk_backward`: the factor products ``u``, ``v`` of each chunk are kept
    for the backward, three GEMMs there); a second-order derivative (``create_graph``)
    recomputes each chunk with autograd ops (:meth:`CPBackend.forward`)."""

    @staticmethod
    def forward(ctx, impl, k, x1, x2, weight):
        ctx.impl, ctx.chunk, ctx.spans = impl, k, spans(x1.shape[0], k)
        y = x1.new_empty(x1.shape[0], impl.plan3.width)
        keep = any(ctx.needs_input_grad[2:])
        uv = [impl._chunk_forward(x1[a:b], x2[a:b], rows_of(weight, a, b), y[a:b], keep) for a, b in ctx.spans]
        # u, v of each chunk (R/d times the inputs' memory, as autograd of the product would keep)
        ctx.save_for_backward(x1, x2, weight, *(t for p in uv if p for t in p))
        return y

    @staticmethod
    def backward(ctx, gy):
        x1, x2, weight, *uv = ctx.saved_tensors
        impl, ranges = ctx.impl, ctx.spans
        need = ctx.needs_input_grad[2:]
        if torch.is_grad_enabled():  # create_graph: derivatives of the gradient are wanted
            def ref(a1, a2, aw):  # the default chunk loop (split + cat) on autograd ops
                return run_in_chunks(impl.forward, (a1, a2), aw, ctx.chunk)
            return (None, None, *grads_by_recompute(ref, (x1, x2, weight), gy, need))

        gy = gy.contiguous()

        def step(i, a, b, out):
            return impl._chunk_backward(uv[2 * i], uv[2 * i + 1], rows_of(weight, a, b), gy[a:b], need, out)

        return (None, None, *grads_in_chunks(step, ranges, x1, x2, weight, need))
