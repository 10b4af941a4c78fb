"""Equivariance checking helpers, in the library so every model and backend can use them.

``wigner_D`` builds representation matrices in float64 to ~1e-14 (e3nn's
``Irreps.D_from_matrix`` is only float32-accurate as a representation): D_l is fitted
from the spherical harmonics, ``Y_l(R r) = D_l(R) Y_l(r)``, by least squares over random
points. For an improper matrix Q (det -1) the rotation part is R = -Q and
``D_{l,p}(Q) = p D_l(-Q)`` (e3nn's convention).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from e3nn import o3

__all__ = ["random_orthogonal", "wigner_D", "equivariance_error"]


def random_orthogonal(seed: int | None = None, *, improper: bool = False) -> np.ndarray:
    """A random 3x3 rotation (``improper=True``: rotation times inversion), float64."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if improper else q


def _d_l(l: int, R: np.ndarray) -> np.ndarray:
    if l == 0:
        return np.ones((1, 1))
    rng = np.random.default_rng(1234 + l)
    pts = rng.standard_normal((max(64, 8 * (2 * l + 1)), 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    sh = lambda p: o3.spherical_harmonics(l, torch.from_numpy(p), normalize=False, normalization="component").numpy()  # noqa: E731
    Y = sh(pts)  # [P, 2l+1]
    YR = sh(pts @ R.T)
    # YR = Y D^T  ->  D^T = lstsq(Y, YR)
    Dt, *_ = np.linalg.lstsq(Y, YR, rcond=None)
    return Dt.T


def wigner_D(irreps, Q: np.ndarray) -> torch.Tensor:
    """Block-diagonal representation matrix ``[dim, dim]`` (float64) of the orthogonal 3x3 ``Q``
    acting on features with ``irreps`` in multiplicity-major layout (``x' = x @ D.T``)."""
    irreps = o3.Irreps(irreps)
    Q = np.asarray(Q, dtype=np.float64)
    improper = np.linalg.det(Q) < 0
    R = -Q if improper else Q
    blocks = []
    for mul, ir in irreps:
        D = _d_l(ir.l, R) * (ir.p if improper else 1)
        blocks += [D] * mul
    dim = sum(b.shape[0] for b in blocks)
    out = np.zeros((dim, dim))
    i = 0
    for b in blocks:
        out[i : i + b.shape[0], i : i + b.shape[0]] = b
        i += b.shape[0]
    return torch.from_numpy(out)


def equivariance_error(
    fn: Callable[..., torch.Tensor],
    irreps_in: Sequence,
    irreps_out,
    *,
    n: int = 8,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> float:
    """Largest relative error ``||f(D x...) - D f(x...)|| / ||f(x...)||`` over one random
    rotation and one random rotation-inversion, with random inputs of ``n`` samples."""
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, o3.Irreps(ir).dim, generator=g, dtype=torch.float64).to(dtype) for ir in irreps_in]
    worst = 0.0
    for k, improper in enumerate((False, True)):
        Q = random_orthogonal(seed + k, improper=improper)
        Ds = [wigner_D(ir, Q).to(dtype) for ir in irreps_in]
        Dout = wigner_D(irreps_out, Q).to(dtype)
        y = fn(*xs)
        y_rot = fn(*[x @ D.T for x, D in zip(xs, Ds)])
        err = (y_rot - y @ Dout.T).norm() / y.norm().clamp_min(1e-300)
        worst = max(worst, float(err))
    return worst
