"""Radial part of the edges: Bessel basis, smooth polynomial cutoff and the radial MLP.

All modules are created in float64 (their constants computed in float64, whatever torch's
default dtype) and cast by the owning model.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["BesselBasis", "PolynomialCutoff", "RadialMLP", "silu_norm"]


class BesselBasis(torch.nn.Module):
    """``b_n(r) = sqrt(2 / r_max) sin(n pi r / r_max) / r``, n = 1..num_basis (bounded at r -> 0).

    Shapes: ``r [E]`` in Å -> ``[E, num_basis]``.
    """

    def __init__(self, r_max: float, num_basis: int = 8):
        super().__init__()
        self.r_max = float(r_max)
        freq = torch.arange(1, num_basis + 1, dtype=torch.float64) * (math.pi / self.r_max)
        self.register_buffer("freq", freq)
        self.prefactor = math.sqrt(2.0 / self.r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.freq * r) / r


class PolynomialCutoff(torch.nn.Module):
    """Smooth envelope (MACE / DimeNet), x = r / r_max:

    ``f(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)`` for x < 1, else 0.
    f, f' and f'' vanish at r_max, so energies and forces are continuous when an atom
    crosses the cutoff. Shapes: ``r [E]`` -> ``[E]``.
    """

    def __init__(self, r_max: float, p: int = 5):
        super().__init__()
        self.r_max = float(r_max)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = r / self.r_max
        xp = x.pow(p)
        f = 1.0 - 0.5 * (p + 1) * (p + 2) * xp + p * (p + 2) * xp * x - 0.5 * p * (p + 1) * xp * x * x
        return f * (x < 1.0).to(f.dtype)


def silu_norm() -> float:
    """``1 / sqrt(E[silu(z)^2])`` for z ~ N(0, 1) (Gauss–Hermite quadrature, float64): the
    factor that keeps unit second moment through a SiLU, as e3nn's ``normalize2mom``."""
    x, w = np.polynomial.hermite_e.hermegauss(200)
    silu = x / (1.0 + np.exp(-x))
    return float(1.0 / np.sqrt(np.sum(w * silu**2) / np.sqrt(2 * np.pi)))


class RadialMLP(torch.nn.Module):
    """MLP without biases from the edge features to tensor-product weights.

    ``widths = [in, hidden..., out]``; each layer is ``x @ W / sqrt(fan_in)`` with
    ``W ~ N(0, 1)``, SiLU (second-moment normalised) between layers. Its input is the
    Bessel basis times the cutoff envelope (as MACE): with no biases and SiLU(0) = 0 the
    output and its first two derivatives vanish with the envelope at r_max, so every edge
    weight goes smoothly to 0. Shapes: ``edge_feats [E, in]`` -> ``[E, out]``.
    """

    def __init__(self, widths: list[int], *, generator: torch.Generator):
        super().__init__()
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(a, b, generator=generator, dtype=torch.float64))
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.scales = [1.0 / math.sqrt(a) for a in widths[:-1]]
        self.act_norm = silu_norm()

    def forward(self, edge_feats: torch.Tensor) -> torch.Tensor:
        x = edge_feats
        for k, w in enumerate(self.weights):
            # the SiLU's normalisation is folded into the next layer's (small) weight matrix
            # instead of multiplying the [E, width] activations
            scale = self.scales[k] if k == 0 else self.scales[k] * self.act_norm
            if k:
                x = torch.nn.functional.silu(x)
            x = x @ (w * scale)
        return x
