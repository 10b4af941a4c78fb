"""Fourier spectral convolution, the kernel-integral layer of the Fourier Neural Operator.

Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, Stuart, Anandkumar,
"Fourier Neural Operator for Parametric Partial Differential Equations", ICLR 2021.

``(K u)(x) = IFFT( R_k * FFT(u)_k )(x)`` with ``R`` complex weights on the lowest
``modes`` frequencies and every higher frequency set to zero.  Because the
forward FFT and its inverse carry reciprocal ``1/N`` factors, the weights act on
Fourier coefficients of the underlying function, not of the grid: a band-limited
input sampled at any resolution ``N > 2 * modes`` gives the same output at the
sample points (grid independence / discretisation invariance).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SpectralConv1d", "SpectralConv2d"]


def _complex_dtype(dtype: torch.dtype | None) -> torch.dtype:
    real = dtype if dtype is not None else torch.get_default_dtype()
    return torch.complex128 if real == torch.float64 else torch.complex64


class SpectralConv1d(nn.Module):
    """1-D Fourier layer: ``(B, C_in, N) -> (B, C_out, N)``.

    ``y_hat[b, o, k] = sum_i x_hat[b, i, k] * W[i, o, k]`` for ``0 <= k < modes``
    (``x_hat = rfft(x)``), zero for ``k >= modes``; ``y = irfft(y_hat, n=N)``.
    Requires ``N // 2 + 1 >= modes``.

    Args:
        in_channels, out_channels: channel counts.
        modes: number of retained (non-negative) frequencies.
        dtype: real dtype of the inputs; weights are the matching complex dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.modes = in_channels, out_channels, modes
        cdtype = _complex_dtype(dtype)
        # Li et al. initialise with scale 1/(C_in C_out).
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.rand(in_channels, out_channels, modes, dtype=cdtype, device=device))

    @torch.no_grad()
    def reset_to_identity(self) -> "SpectralConv1d":
        """Set ``W[i, o, k] = delta_io``: a pure low-pass filter (requires C_in == C_out)."""
        if self.in_channels != self.out_channels:
            raise ValueError("identity weights need in_channels == out_channels")
        eye = torch.eye(self.in_channels, dtype=self.weight.dtype, device=self.weight.device)
        self.weight.copy_(eye.unsqueeze(-1).expand_as(self.weight))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        if n // 2 + 1 < self.modes:
            raise ValueError(f"grid of {n} points resolves {n // 2 + 1} modes < modes={self.modes}")
        x_ft = torch.fft.rfft(x, dim=-1)
        out_ft = x_ft.new_zeros(x.shape[0], self.out_channels, n // 2 + 1)
        out_ft[..., : self.modes] = torch.einsum("bik,iok->bok", x_ft[..., : self.modes], self.weight)
        return torch.fft.irfft(out_ft, n=n, dim=-1)


class SpectralConv2d(nn.Module):
    """2-D Fourier layer: ``(B, C_in, N1, N2) -> (B, C_out, N1, N2)``.

    Keeps frequencies ``0 <= k1 < modes1`` (block ``weight_pos``) and
    ``-modes1 <= k1 < 0`` (block ``weight_neg``) along the full-FFT axis, as Li et al.,
    and ``0 <= k2 < modes2`` along the real-FFT axis; weights have shape
    ``(C_in, C_out, modes1, modes2)`` each.  Requires ``2 * modes1 <= N1`` and
    ``N2 // 2 + 1 >= modes2``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes1: int,
        modes2: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.modes1, self.modes2 = modes1, modes2
        cdtype = _complex_dtype(dtype)
        scale = 1.0 / (in_channels * out_channels)
        shape = (in_channels, out_channels, modes1, modes2)
        self.weight_pos = nn.Parameter(scale * torch.rand(shape, dtype=cdtype, device=device))
        self.weight_neg = nn.Parameter(scale * torch.rand(shape, dtype=cdtype, device=device))

    @torch.no_grad()
    def reset_to_identity(self) -> "SpectralConv2d":
        """Set both weight blocks to ``delta_io``: a pure low-pass filter."""
        if self.in_channels != self.out_channels:
            raise ValueError("identity weights need in_channels == out_channels")
        eye = torch.eye(self.in_channels, dtype=self.weight_pos.dtype, device=self.weight_pos.device)
        for w in (self.weight_pos, self.weight_neg):
            w.copy_(eye[:, :, None, None].expand_as(w))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n1, n2 = x.shape[-2:]
        m1, m2 = self.modes1, self.modes2
        if 2 * m1 > n1 or n2 // 2 + 1 < m2:
            raise ValueError(f"grid {n1}x{n2} cannot hold modes ({m1}, {m2})")
        x_ft = torch.fft.rfft2(x, dim=(-2, -1))
        out_ft = x_ft.new_zeros(x.shape[0], self.out_channels, n1, n2 // 2 + 1)
        mul = "bixy,ioxy->boxy"
        out_ft[..., :m1, :m2] = torch.einsum(mul, x_ft[..., :m1, :m2], self.weight_pos)
        out_ft[..., n1 - m1 :, :m2] = torch.einsum(mul, x_ft[..., n1 - m1 :, :m2], self.weight_neg)
        return torch.fft.irfft2(out_ft, s=(n1, n2), dim=(-2, -1))
