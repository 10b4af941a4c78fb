"""Spherical functions: real spherical harmonics on grids, their 2D Fourier coefficients,
and the analytic Gaunt factor.

Basis convention (shared by the ``gaunt`` and ``grid`` backends): a feature vector ``x`` of
degree-l blocks is the function ``f(r) = sum_lm x_lm Y_lm(r)`` with e3nn's real harmonics in
*component* normalisation (``sum_m Y_lm(r)^2 = 2l+1``). Projections use the mean over the
sphere, ``<f, g> = (1/4pi) \\int f g dOmega``, under which that basis is orthonormal.
With this convention the product of the constant 1 with g is g.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from e3nn import o3

__all__ = [
    "sh_values",
    "gauss_legendre_grid",
    "mirror_signs",
    "torus_fourier_coefficients",
    "theta_integral",
    "gaunt_factor",
    "wigner_3j_zero",
]


def sh_values(ls, points: np.ndarray) -> np.ndarray:
    """Component-normalised real spherical harmonics of degrees ``ls`` at unit ``points [P, 3]``.

    Returns ``[P, sum(2l+1)]`` float64, e3nn's basis and ordering.
    """
    pts = torch.as_tensor(points, dtype=torch.float64)
    y = o3.spherical_harmonics(list(ls), pts, normalize=False, normalization="component")
    return y.numpy()


@functools.lru_cache(maxsize=None)
def gauss_legendre_grid(n_lat: int, n_lon: int, polar: str = "z") -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre (in cos theta) x uniform (in phi) grid on the sphere, with theta measured
    from the ``polar`` axis: ``"z"`` (points ``(sin t cos p, sin t sin p, cos t)``) or ``"y"``
    (the same points rotated by the cyclic permutation x -> z -> y -> x, i.e.
    ``(sin t sin p, cos t, sin t cos p)``: e3nn's polar axis, about which the real harmonic of
    index ``m`` is even or odd under the mirror as ``l + |m|``).

    Returns ``points [n_lat*n_lon, 3]`` (rings in ascending polar coordinate) and quadrature
    ``weights [n_lat*n_lon]`` summing to 1 (the mean over the sphere). Exact for spherical
    polynomials of degree <= min(2 n_lat - 1, n_lon - 1), whatever the axis (a rotation maps
    that space onto itself).
    """
    x, w = np.polynomial.legendre.leggauss(n_lat)
    phi = 2 * np.pi * np.arange(n_lon) / n_lon
    sin_t = np.sqrt(1 - x**2)
    pts = np.stack(
        [
            (sin_t[:, None] * np.cos(phi)[None, :]).ravel(),
            (sin_t[:, None] * np.sin(phi)[None, :]).ravel(),
            np.repeat(x, n_lon),
        ],
        axis=1,
    )
    if polar == "y":
        pts = pts[:, [1, 2, 0]].copy()
    elif polar != "z":
        raise ValueError(f"gauss_legendre_grid: polar must be 'z' or 'y', got {polar!r}")
    weights = np.repeat(w, n_lon) / (2.0 * n_lon)
    return pts, weights


def mirror_signs(y: np.ndarray, n_lat: int, n_lon: int) -> np.ndarray:
    """Signs ``s_j = +-1`` with ``Y_j(mirrored r) = s_j Y_j(r)`` under the reflection of the
    polar axis of a :func:`gauss_legendre_grid`, from the values ``y [P, d]`` of the harmonics
    on it (rings in ascending polar coordinate: ring i mirrors ring n_lat - 1 - i). Each of
    e3nn's real harmonics is even or odd under the reflection of a coordinate axis; a basis
    where one is not raises ``RuntimeError``."""
    v = y.reshape(n_lat, n_lon, -1)
    s = np.where((v[::-1] * v).sum(axis=(0, 1)) >= 0, 1.0, -1.0)
    if np.abs(v[::-1] - s * v).max() > 1e-9 * max(1.0, np.abs(v).max()):
        raise RuntimeError("harmonics that are neither even nor odd under the mirror of the polar axis")
    return s


def torus_points(n_u: int, n_v: int) -> np.ndarray:
    """Points r(theta, phi) = (sin t cos p, sin t sin p, cos t) for theta, phi on uniform
    ``n_u x n_v`` grids over [0, 2pi) (the double-Fourier-sphere extension: theta > pi
    gives sin theta < 0, so any polynomial in r is a trigonometric polynomial on the torus)."""
    t = 2 * np.pi * np.arange(n_u) / n_u
    p = 2 * np.pi * np.arange(n_v) / n_v
    st, ct = np.sin(t)[:, None], np.cos(t)[:, None]
    return np.stack(
        [(st * np.cos(p)).ravel(), (st * np.sin(p)).ravel(), np.broadcast_to(ct, (n_u, n_v)).ravel()], axis=1
    )


def torus_fourier_coefficients(ls) -> np.ndarray:
    """2D Fourier coefficients of each basis function on the torus.

    ``Y_lm(r(theta, phi)) = sum_{u,v} F[lm, u, v] exp(i (u theta + v phi))`` with
    ``u, v in [-L, L]`` stored at index ``u mod (2L+1)``. Returns complex ``[d, 2L+1, 2L+1]``.
    Exact: a degree-l harmonic is a trigonometric polynomial of degree <= l in each angle.
    """
    L = max(ls)
    n = 2 * L + 1
    y = sh_values(ls, torus_points(n, n)).reshape(n, n, -1)
    return np.moveaxis(np.fft.fft2(y, axes=(0, 1)) / (n * n), 2, 0)


def theta_integral(k: np.ndarray) -> np.ndarray:
    """``I(k) = \\int_0^pi exp(i k theta) sin(theta) d theta`` for integer ``k`` (complex)."""
    k = np.asarray(k)
    out = np.zeros(k.shape, dtype=np.complex128)
    one = np.abs(k) == 1
    out[one] = 1j * np.sign(k[one]) * np.pi / 2
    kk = k[~one].astype(np.float64)
    out[~one] = (1 + np.cos(np.pi * kk)) / (1 - kk**2)
    return out


def wigner_3j_zero(l1: int, l2: int, l3: int) -> float:
    """The Wigner 3j symbol (l1 l2 l3; 0 0 0), from its closed form (zero for odd l1+l2+l3)."""
    J = l1 + l2 + l3
    if J % 2 or not abs(l1 - l2) <= l3 <= l1 + l2:
        return 0.0
    g = J // 2
    f = math.factorial
    val = math.sqrt(f(J - 2 * l1) * f(J - 2 * l2) * f(J - 2 * l3) / f(J + 1))
    val *= f(g) / (f(g - l1) * f(g - l2) * f(g - l3))
    return (-1) ** g * val


def gaunt_factor(l1: int, l2: int, l3: int) -> float:
    """|c| with Gaunt path = c x (e3nn Wigner 3j path), in mlip's component/mean convention:
    ``sqrt((2l1+1)(2l2+1)(2l3+1)) |(l1 l2 l3; 0 0 0)|`` (the integral-normalised Gaunt
    coefficient ``sqrt(prod(2l+1)/4pi) (l1 l2 l3;000)`` times sqrt(4pi))."""
    return math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1)) * abs(wigner_3j_zero(l1, l2, l3))
