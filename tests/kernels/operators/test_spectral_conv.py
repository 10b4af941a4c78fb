import math

import torch

from mlip.kernels.operators.spectral_conv import SpectralConv1d, SpectralConv2d

TWO_PI = 2 * math.pi


def grid1d(n):
    return torch.arange(n, dtype=torch.float64) / n


def test_1d_identity_passes_low_mode_and_removes_high_mode():
    x = grid1d(64)
    low = torch.sin(TWO_PI * 3 * x) + 0.5 * torch.cos(TWO_PI * 7 * x) + 0.25
    high = torch.cos(TWO_PI * 8 * x) + torch.sin(TWO_PI * 20 * x)
    layer = SpectralConv1d(1, 1, modes=8, dtype=torch.float64).reset_to_identity()
    out = layer((low + high)[None, None])[0, 0]
    assert torch.allclose(out, low, atol=1e-12)


def test_1d_weights_scale_each_mode_by_its_complex_weight():
    # A weight w on mode k maps cos(k x) to Re(w e^{ikx}) = Re(w) cos - Im(w) sin.
    x = grid1d(32)
    layer = SpectralConv1d(1, 1, modes=6, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, 0, 4] = 2.0 - 3.0j
    out = layer(torch.cos(TWO_PI * 4 * x)[None, None])[0, 0]
    expect = 2.0 * torch.cos(TWO_PI * 4 * x) + 3.0 * torch.sin(TWO_PI * 4 * x)
    assert torch.allclose(out, expect, atol=1e-12)


def test_1d_channel_mixing():
    x = grid1d(32)
    layer = SpectralConv1d(2, 3, modes=4, dtype=torch.float64)
    u = torch.stack([torch.cos(TWO_PI * x), torch.sin(TWO_PI * 2 * x)])[None]
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, 2, 1] = 1.0  # channel 0, mode 1 -> output channel 2
        layer.weight[1, 0, 2] = -1.0  # channel 1, mode 2 -> output channel 0, negated
    out = layer(u)[0]
    assert torch.allclose(out[2], u[0, 0], atol=1e-12)
    assert torch.allclose(out[0], -u[0, 1], atol=1e-12)
    assert torch.allclose(out[1], torch.zeros_like(x), atol=1e-12)


def test_1d_same_function_at_64_and_128_points_gives_same_output():
    torch.manual_seed(0)
    layer = SpectralConv1d(2, 3, modes=12, dtype=torch.float64)

    def f(n):
        x = grid1d(n)
        a = torch.sin(TWO_PI * 2 * x) + 0.3 * torch.cos(TWO_PI * 11 * x) + 0.7 * torch.sin(TWO_PI * 17 * x)
        b = torch.cos(TWO_PI * 5 * x) - 0.2 * torch.sin(TWO_PI * 25 * x)
        return torch.stack([a, b])[None]

    y64, y128 = layer(f(64)), layer(f(128))
    assert torch.allclose(y128[..., ::2], y64, atol=1e-12)
    assert y64.abs().max() > 1e-2


def test_2d_identity_passes_low_modes_of_both_signs_and_removes_high():
    n = 32
    g = torch.arange(n, dtype=torch.float64) / n
    x, y = torch.meshgrid(g, g, indexing="ij")
    low = torch.cos(TWO_PI * (2 * x + 3 * y)) + torch.sin(TWO_PI * (3 * x - 2 * y)) + 0.1
    high = torch.cos(TWO_PI * (2 * x + 9 * y)) + torch.cos(TWO_PI * (6 * x + y))
    layer = SpectralConv2d(1, 1, modes1=4, modes2=4, dtype=torch.float64).reset_to_identity()
    out = layer((low + high)[None, None])[0, 0]
    assert torch.allclose(out, low, atol=1e-12)


def test_2d_same_function_at_32_and_64_points_gives_same_output():
    torch.manual_seed(1)
    layer = SpectralConv2d(1, 2, modes1=5, modes2=5, dtype=torch.float64)

    def f(n):
        g = torch.arange(n, dtype=torch.float64) / n
        x, y = torch.meshgrid(g, g, indexing="ij")
        u = torch.sin(TWO_PI * (x + 2 * y)) + 0.5 * torch.cos(TWO_PI * (4 * x - 3 * y))
        u = u + 0.2 * torch.sin(TWO_PI * 9 * x)  # above modes1: removed at both resolutions
        return u[None, None]

    y32, y64 = layer(f(32)), layer(f(64))
    assert torch.allclose(y64[..., ::2, ::2], y32, atol=1e-12)
    assert y32.abs().max() > 1e-2
