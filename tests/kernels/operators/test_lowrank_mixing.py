import math

import torch

from mlip.kernels.operators.lowrank_mixing import LowRankMixing


def dft(n):
    k = torch.arange(n, dtype=torch.float64)
    return torch.exp(-2j * math.pi * torch.outer(k, k) / n)


def test_rank_one_dft_factors_equal_fft2():
    h, w = 8, 12
    layer = LowRankMixing(h, w, 1, dtype=torch.complex128)
    with torch.no_grad():
        layer.w1[0] = dft(h)
        layer.w2[0] = dft(w)
    x = torch.randn(3, 2, h, w, dtype=torch.float64)
    assert torch.allclose(layer(x), torch.fft.fft2(x), atol=1e-12)


def test_rank_two_split_of_dft_equals_fft2():
    # F = Re F + i Im F along the first axis: two real-imag terms, still fft2.
    h, w = 6, 5
    layer = LowRankMixing(h, w, 2, dtype=torch.complex128)
    f = dft(h)
    with torch.no_grad():
        layer.w1[0] = f.real.to(torch.complex128)
        layer.w1[1] = 1j * f.imag
        layer.w2[0] = dft(w)
        layer.w2[1] = dft(w)
    x = torch.randn(4, 1, h, w, dtype=torch.float64)
    assert torch.allclose(layer(x), torch.fft.fft2(x), atol=1e-12)


def test_matches_kronecker_form():
    h, w, r = 5, 7, 3
    torch.manual_seed(0)
    layer = LowRankMixing(h, w, r, dtype=torch.float64)
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    dense = layer.kronecker()
    assert dense.shape == (h * w, h * w)
    expect = (x.reshape(2, 3, h * w) @ dense.T).reshape(2, 3, h, w)
    assert torch.allclose(layer(x), expect, atol=1e-12)
    # Independent of torch.kron: entry (i*W + k, j*W + l) of the dense map.
    i, k, j, l = 3, 2, 1, 6
    manual = sum(layer.w1[q, i, j] * layer.w2[q, k, l] for q in range(r))
    assert torch.allclose(dense[i * w + k, j * w + l], manual)
