"""Sorting-based Krylov subspace recycling (SKR) for sequences of linear systems.

Wang et al., "Accelerating Data Generation for Neural Operators via Krylov
Subspace Recycling", ICLR 2024.

Generating training data for a neural operator means solving many related
systems ``A_i x_i = b_i``.  SKR (1) orders them so that neighbours are similar
(greedy nearest neighbour on the distance between systems), then (2) solves
them in that order with GCRO-DR (Parks, de Sturler, Mackey, Johnson, Maiti,
"Recycling Krylov Subspaces for Sequences of Linear Systems", SIAM J. Sci.
Comput. 28, 2006): restarted GMRES augmented with, and deflated by, a
``k``-dimensional subspace ``U`` spanned by harmonic Ritz vectors of the
previous cycles, carried over from one system to the next.

Float64 numpy; ``A`` may be a dense array, a scipy sparse matrix or a
``scipy.sparse.linalg.LinearOperator`` (anything supporting ``A @ v``).
Every result reports the number of matrix-vector products spent.

scipy (the optional extra ``krylov``) is imported when a GCRO-DR solve or a sparse
distance needs it, not at import: without it, :func:`gmres_restarted`,
:func:`greedy_order` and dense distances still work.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

__all__ = [
    "KrylovResult",
    "gmres_restarted",
    "GCRODR",
    "greedy_order",
    "pairwise_system_distances",
    "solve_sequence",
    "SequenceResult",
]


def _scipy() -> ModuleType:
    """scipy with ``linalg``, ``sparse`` and ``sparse.linalg`` loaded; a clear error without it."""
    try:
        import scipy
        import scipy.linalg
        import scipy.sparse
        import scipy.sparse.linalg
    except ImportError as e:
        raise ImportError(
            "Krylov recycling (GCRO-DR) needs the scipy package: pip install 'mlip[krylov]'"
        ) from e
    return scipy


def _issparse(a) -> bool:
    # a scipy sparse matrix can only exist once scipy.sparse is imported, so dense input
    # never needs scipy
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(a)


@dataclass
class KrylovResult:
    """One solve: solution ``x`` ``(n,)``, ``matvecs`` spent, final relative
    residual ``||b - A x|| / ||b||`` (recomputed, not the recursive estimate),
    ``converged`` and the number of restart ``cycles``."""

    x: np.ndarray
    matvecs: int
    residual: float
    converged: bool
    cycles: int


class _Counted:
    def __init__(self, a):
        self.a = a
        self.count = 0

    def __matmul__(self, v):
        self.count += 1 if v.ndim == 1 else v.shape[1]
        return np.asarray(self.a @ v)


def _arnoldi(a: _Counted, r: np.ndarray, steps: int, tol_abs: float, c: np.ndarray | None = None):
    """Arnoldi on ``(I - C C^T) A`` (plain ``A`` when ``c`` is ``None``) from ``r``.

    Stops early once the least-squares residual ``min ||beta e1 - H y||`` falls
    below ``tol_abs`` (with a recycled block ``[[D, B], [0, H]]`` the ``D``
    part absorbs ``B`` exactly, so the same test applies).  Returns
    ``V (n, j+1)``, ``H (j+1, j)``, ``B (k, j)``, ``j``.
    """
    n = r.shape[0]
    beta = np.linalg.norm(r)
    k = 0 if c is None else c.shape[1]
    v = np.zeros((n, steps + 1))
    h = np.zeros((steps + 1, steps))
    bmat = np.zeros((k, steps))
    v[:, 0] = r / beta
    for j in range(1, steps + 1):
        w = a @ v[:, j - 1]
        if k:
            bmat[:, j - 1] = c.T @ w
            w = w - c @ bmat[:, j - 1]
        # Two passes of modified Gram-Schmidt: losing orthogonality would
        # corrupt the harmonic Ritz vectors that are carried to later systems.
        for _ in range(2):
            for i in range(j):
                coef = v[:, i] @ w
                h[i, j - 1] += coef
                w = w - coef * v[:, i]
        h[j, j - 1] = np.linalg.norm(w)
        if h[j, j - 1] <= 1e-14 * beta:  # happy breakdown: the solution is in the space
            return v[:, : j + 1], h[: j + 1, :j], bmat[:, :j], j
        v[:, j] = w / h[j, j - 1]
        e1 = np.zeros(j + 1)
        e1[0] = beta
        y = np.linalg.lstsq(h[: j + 1, :j], e1, rcond=None)[0]
        if np.linalg.norm(e1 - h[: j + 1, :j] @ y) <= tol_abs:
            return v[:, : j + 1], h[: j + 1, :j], bmat[:, :j], j
    return v, h, bmat, steps


def _harmonic_ritz(g: np.ndarray, w: np.ndarray, vhat: np.ndarray, k: int) -> np.ndarray:
    """Real basis ``P (m, k)`` of the ``k`` harmonic Ritz vectors of smallest
    magnitude: ``G^T G z = theta G^T W^T Vhat z`` (Parks et al. 2006, Sec. 2.4)."""
    lhs = g.T @ g
    rhs = g.T @ (w.T @ vhat)
    theta, z = _scipy().linalg.eig(lhs, rhs)
    mag = np.where(np.isfinite(theta), np.abs(theta), np.inf)
    cols = []
    for i in np.argsort(mag, kind="stable"):
        if len(cols) >= k:
            break
        vec = z[:, i]
        if np.abs(vec.imag).max() <= 1e-12 * np.abs(vec).max():
            cols.append(vec.real)
        elif theta[i].imag > 0:
            # A complex pair spans the same real 2-D space as (Re, Im) of one member.
            cols.extend([vec.real, vec.imag])
    p = np.stack(cols[:k], axis=1)
    q, _ = np.linalg.qr(p)
    return q


def _recycle_update(g, w, vhat, k):
    p = _harmonic_ritz(g, w, vhat, k)
    q, r = np.linalg.qr(g @ p)
    c = w @ q
    u = _scipy().linalg.solve_triangular(r, (vhat @ p).T, trans="T").T  # (Vhat P) R^{-1}
    return u, c


def gmres_restarted(
    a, b: np.ndarray, *, x0: np.ndarray | None = None, restart: int = 30, tol: float = 1e-8, maxiter: int = 10_000
) -> KrylovResult:
    """Restarted GMRES(m) (Saad & Schultz 1986), the from-scratch baseline.

    ``a``: ``(n, n)`` operator; ``b``: ``(n,)``.  Stops when
    ``||b - A x|| <= tol ||b||`` or after ``maxiter`` matrix-vector products.
    """
    op = _Counted(a)
    b = np.asarray(b, dtype=np.float64)
    x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=np.float64)
    bnorm = np.linalg.norm(b)
    r = b - op @ x if x0 is not None else b.copy()
    cycles = 0
    while np.linalg.norm(r) > tol * bnorm and op.count < maxiter:
        beta = np.linalg.norm(r)
        v, h, _, j = _arnoldi(op, r, restart, tol * bnorm)
        e1 = np.zeros(j + 1)
        e1[0] = beta
        y = np.linalg.lstsq(h, e1, rcond=None)[0]
        x = x + v[:, :j] @ y
        r = b - op @ x
        cycles += 1
    res = np.linalg.norm(b - np.asarray(a @ x)) / bnorm
    return KrylovResult(x=x, matvecs=op.count, residual=res, converged=res <= tol, cycles=cycles)


@dataclass
class GCRODR:
    """GCRO-DR(m, k) solver that keeps its recycled subspace between calls.

    ``restart`` = ``m`` (total subspace size per cycle, recycled + new
    Krylov vectors), ``k`` = recycled dimension, ``tol`` relative residual,
    ``maxiter`` the most matrix-vector products one solve may spend.
    :meth:`solve` uses and then refreshes ``self.U`` ``(n, k)``; set it to
    ``None`` to forget it.  The ``k`` matrix-vector products to form ``C = A U``
    for a new matrix are counted.
    """

    restart: int = 30
    k: int = 10
    tol: float = 1e-8
    maxiter: int = 10_000
    U: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.k < self.restart:
            raise ValueError(f"need 0 < k < restart, got k={self.k}, restart={self.restart}")
        _scipy()  # fail when the solver is made, not in the middle of a sequence

    def solve(self, a, b: np.ndarray, x0: np.ndarray | None = None) -> KrylovResult:
        """Solve ``A x = b`` (``A`` ``(n, n)``, ``b`` ``(n,)``) with recycling."""
        op = _Counted(a)
        b = np.asarray(b, dtype=np.float64)
        bnorm = np.linalg.norm(b)
        tol_abs = self.tol * bnorm
        x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=np.float64)
        r = b - op @ x if x0 is not None else b.copy()
        cycles = 0
        u = c = None
        if self.U is not None:
            # New matrix: re-derive C = A U with orthonormal columns, keeping A U = C.
            q, rr = np.linalg.qr(op @ self.U)
            c = q
            u = _scipy().linalg.solve_triangular(rr, self.U.T, trans="T").T
            x = x + u @ (c.T @ r)
            r = r - c @ (c.T @ r)
        while np.linalg.norm(r) > tol_abs and op.count < self.maxiter:
            beta = np.linalg.norm(r)
            cycles += 1
            if u is None:
                # No subspace yet: a plain GMRES(m) cycle, then extract U from it.
                v, h, _, j = _arnoldi(op, r, self.restart, tol_abs)
                e1 = np.zeros(j + 1)
                e1[0] = beta
                y = np.linalg.lstsq(h, e1, rcond=None)[0]
                x = x + v[:, :j] @ y
                r = r - v @ (h @ y)
                if j > self.k:
                    u, c = _recycle_update(h, v, v[:, :j], self.k)
                continue
            k = u.shape[1]
            v, h, bmat, j = _arnoldi(op, r, self.restart - k, tol_abs, c)
            # Column scaling of U (Parks et al.) keeps the small problem well conditioned.
            d = 1.0 / np.linalg.norm(u, axis=0)
            vhat = np.hstack([u * d, v[:, :j]])
            what = np.hstack([c, v])
            g = np.zeros((k + j + 1, k + j))
            g[:k, :k] = np.diag(d)
            g[:k, k:] = bmat
            g[k:, k:] = h
            rhs = np.zeros(k + j + 1)
            rhs[k] = beta  # C^T r = 0 by construction
            y = np.linalg.lstsq(g, rhs, rcond=None)[0]
            x = x + vhat @ y
            r = r - what @ (g @ y)
            u, c = _recycle_update(g, what, vhat, self.k)
        self.U = u if u is not None else self.U
        res = np.linalg.norm(b - np.asarray(a @ x)) / bnorm
        return KrylovResult(x=x, matvecs=op.count, residual=res, converged=res <= self.tol, cycles=cycles)


def pairwise_system_distances(matrices: Sequence, rhs: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """``D[i, j] = sqrt(||A_i - A_j||_F^2 + ||b_i - b_j||^2)``, shape ``(N, N)``.

    ``matrices``: dense arrays or scipy sparse matrices of equal shape; ``rhs``
    optional.  For parameterised families, distances between the parameters
    are a cheaper choice; pass those to :func:`greedy_order` instead.
    """
    n = len(matrices)
    d2 = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            diff = matrices[i] - matrices[j]
            if _issparse(diff):
                val = _scipy().sparse.linalg.norm(diff, "fro") ** 2
            else:
                val = float(np.sum(np.asarray(diff) ** 2))
            if rhs is not None:
                val += float(np.sum((np.asarray(rhs[i]) - np.asarray(rhs[j])) ** 2))
            d2[i, j] = d2[j, i] = val
    return np.sqrt(d2)


def greedy_order(distances: np.ndarray, start: int = 0) -> list[int]:
    """Greedy nearest-neighbour tour through ``N`` items given ``distances`` ``(N, N)``.

    SKR's sorting step: from ``start``, repeatedly go to the closest unvisited
    item.  Returns a permutation of ``range(N)``.
    """
    d = np.asarray(distances, dtype=np.float64)
    n = d.shape[0]
    order = [start]
    seen = np.zeros(n, dtype=bool)
    seen[start] = True
    for _ in range(n - 1):
        row = np.where(seen, np.inf, d[order[-1]])
        nxt = int(np.argmin(row))
        order.append(nxt)
        seen[nxt] = True
    return order


@dataclass
class SequenceResult:
    """Solutions in the *input* order, the solve ``order``, per-system results
    (in solve order) and the total number of matrix-vector products."""

    solutions: list[np.ndarray]
    order: list[int]
    results: list[KrylovResult]
    matvecs: int


def solve_sequence(
    matrices: Sequence,
    rhs: Sequence[np.ndarray],
    *,
    restart: int = 30,
    k: int = 10,
    tol: float = 1e-8,
    sort: bool = True,
    distances: np.ndarray | None = None,
    maxiter: int = 10_000,
) -> SequenceResult:
    """SKR: sort the systems (greedy nearest neighbour) and solve them with a recycled GCRO-DR(m, k).

    ``distances`` ``(N, N)`` overrides :func:`pairwise_system_distances`.
    ``sort=False`` keeps the input order (recycling only).
    """
    n = len(matrices)
    if len(rhs) != n:
        raise ValueError(f"got {n} matrices but {len(rhs)} right-hand sides")
    if sort:
        dist = pairwise_system_distances(matrices, rhs) if distances is None else distances
        order = greedy_order(dist)
    else:
        order = list(range(n))
    solver = GCRODR(restart=restart, k=k, tol=tol, maxiter=maxiter)
    results = [solver.solve(matrices[i], rhs[i]) for i in order]
    solutions: list[np.ndarray] = [np.empty(0)] * n
    for i, res in zip(order, results):
        solutions[i] = res.x
    return SequenceResult(solutions=solutions, order=order, results=results, matvecs=sum(r.matvecs for r in results))
