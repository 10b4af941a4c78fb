"""``gaunt`` backend: Gaunt tensor product in the 2D Fourier basis (Luo et al., 2024).

Each input is a function on the sphere; written in the angles (theta, phi) extended to the
torus, a degree-l harmonic is a trigonometric polynomial ``sum F_uv exp(i(u theta + v phi))``
with ``|u|, |v| <= l`` (``mlip.kernels.sphere.torus_fourier_coefficients``). The product of
two functions is the 2D convolution of their coefficient arrays, done by FFT: zero-padded
inverse real FFT to an ``n_u x n_v`` torus grid, pointwise product, forward real FFT. The
projection back onto degree-l3 harmonics is a fixed linear map of the coefficients (the
theta integral of ``exp(ik theta) sin theta`` in closed form), so every step is O(L^3)
per channel up to the FFT's log factor. The transform sizes ``n_u = 2(L1+L2)+1`` and
``n_v >= L1+L2+L3+1`` make it exact: it equals the ``grid`` backend to rounding.

Weights: see :mod:`mlip.kernels.tp.product`.
"""

from __future__ import annotations

import numpy as np
import torch

from ..sphere import theta_integral, torus_fourier_coefficients
from .product import SphericalProductBackend

__all__ = ["GauntBackend"]


class GauntBackend(SphericalProductBackend):
    """Gaunt TP by FFT convolution of 2D Fourier coefficients (exact, O(L^3))."""

    name = "gaunt"

    def _build_transforms(self) -> None:
        s = self.spec
        L1, L2, L3 = self.L1, self.L2, self.L3
        self.n_u = 2 * (L1 + L2) + 1
        self.n_v = max(L1 + L2 + L3 + 1, 2 * max(L1, L2, L3) + 1)
        self.n_vh = self.n_v // 2 + 1
        for side, irs, L in (("1", s.irs1, L1), ("2", s.irs2, L2)):
            F = torus_fourier_coefficients([ir.l for ir in irs])  # [d, 2L+1, 2L+1], u,v mod 2L+1
            n = 2 * L + 1
            # half spectrum v in [0, L], rows u in [0..L, -L..-1] (already in mod order)
            half = F[:, :, : L + 1].reshape(F.shape[0], n * (L + 1))
            self.add_const("Are" + side, half.real.copy())
            self.add_const("Aim" + side, half.imag.copy())
            setattr(self, "L" + side + "_", L)
        # projection: out = sum_{u, v>=0} c_v Re(H_uv K_uv), K_uv = 1/2 sum_u' Y_{u',-v} I(u+u')
        irs3 = s.irs3
        Y = torus_fourier_coefficients([ir.l for ir in irs3])  # [d3, n3, n3]
        n3 = 2 * L3 + 1
        u_grid = np.fft.fftfreq(self.n_u, 1.0 / self.n_u).astype(int)  # u for H row index
        u3 = np.fft.fftfreq(n3, 1.0 / n3).astype(int)
        K = np.zeros((self.n_u, L3 + 1, Y.shape[0]), dtype=np.complex128)
        Iuu = theta_integral(u_grid[:, None] + u3[None, :])  # [n_u, n3]
        for v in range(L3 + 1):
            Yv = Y[:, :, (-v) % n3]  # [d3, n3] over u'
            K[:, v, :] = 0.5 * Iuu @ Yv.T
            if v > 0:
                K[:, v, :] *= 2.0  # the conjugate half v < 0 contributes the same real part
        K = K.reshape(self.n_u * (L3 + 1), -1)
        self.add_const("Kre", K.real.copy())
        self.add_const("Kim", -K.imag.copy())

    def floats_per_sample(self) -> int:
        return self.spec.channels * self.n_u * self.n_v

    def _to_values(self, xw, side):
        L = getattr(self, "L" + side + "_")
        n = 2 * L + 1
        B = xw.shape[0]
        re = (xw @ self.const("Are" + side, xw)).view(B, n, L + 1)
        im = (xw @ self.const("Aim" + side, xw)).view(B, n, L + 1)
        F = torch.complex(re, im)
        # zero-pad u (insert between the non-negative and negative halves) and v
        pad_u = self.n_u - n
        F = torch.cat([F[:, : L + 1], F.new_zeros(B, pad_u, L + 1), F[:, L + 1 :]], dim=1)
        F = torch.nn.functional.pad(F, (0, self.n_vh - (L + 1)))
        return torch.fft.irfft2(F, s=(self.n_u, self.n_v), norm="forward")

    def _from_values(self, h):
        H = torch.fft.rfft2(h, norm="forward")[:, :, : self.L3 + 1].reshape(h.shape[0], -1)
        return H.real @ self.const("Kre", h) + H.imag @ self.const("Kim", h)
