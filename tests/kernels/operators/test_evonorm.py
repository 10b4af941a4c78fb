import math

import numpy as np
import pytest
import torch

from mlip.kernels.operators.evonorm import EvoNormB0, EvoNormS0


def np_group_std(x, groups, eps):
    n, c = x.shape[:2]
    out = np.empty_like(x)
    size = c // groups
    for i in range(n):
        for g in range(groups):
            block = x[i, g * size : (g + 1) * size]
            out[i, g * size : (g + 1) * size] = math.sqrt(block.var() + eps)
    return out


def test_s0_with_v_zero_is_half_x_over_group_std():
    gen = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(2, 8, 5, 4, generator=gen, dtype=torch.float64) + 1
    layer = EvoNormS0(8, groups=4, dtype=torch.float64)
    with torch.no_grad():
        layer.v1.zero_()
    std = np_group_std(x.numpy(), 4, layer.eps)
    assert np.allclose(layer(x).detach().numpy(), 0.5 * x.numpy() / std, atol=1e-13, rtol=1e-13)


def test_s0_general_form_against_numpy():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 7, generator=gen, dtype=torch.float64)
    layer = EvoNormS0(6, groups=2, dtype=torch.float64)
    with torch.no_grad():
        layer.v1.copy_(torch.linspace(-2, 2, 6))
        layer.gamma.copy_(torch.linspace(0.5, 1.5, 6))
        layer.beta.copy_(torch.linspace(-1, 1, 6))
    xn = x.numpy()
    v1, gamma, beta = (p.detach().numpy()[None, :, None] for p in (layer.v1, layer.gamma, layer.beta))
    expect = xn / (1 + np.exp(-v1 * xn)) / np_group_std(xn, 2, layer.eps) * gamma + beta
    assert np.allclose(layer(x).detach().numpy(), expect, atol=1e-13)


def test_b0_closed_form_for_offset_plus_scaled_pattern():
    # x[n, c] = a_n + s_c z with mean(z) = 0, var(z) = 1 over space: instance
    # variance s_c^2, batch variance s_c^2 + var(a).  With v1 = 0 the max picks
    # the batch term, so y = x / sqrt(s_c^2 + var(a) + eps).
    z = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    a = torch.tensor([0.0, 2.0, -1.0], dtype=torch.float64)
    s = torch.tensor([0.5, 3.0], dtype=torch.float64)
    x = a[:, None, None, None] + s[None, :, None, None] * z
    layer = EvoNormB0(2, dtype=torch.float64)
    with torch.no_grad():
        layer.v1.zero_()
    var_a = a.var(unbiased=False)
    expect = x / torch.sqrt(s[None, :, None, None] ** 2 + var_a + layer.eps)
    assert torch.allclose(layer(x), expect, atol=1e-14)


@pytest.mark.parametrize("training", [True, False])
def test_b0_general_form_against_numpy(training):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.3])[:, None, None]
    layer = EvoNormB0(3, momentum=0.1, dtype=torch.float64)
    with torch.no_grad():
        layer.v1.copy_(torch.tensor([0.7, -0.4, 1.5]))
        layer.gamma.copy_(torch.tensor([1.2, 0.8, 1.0]))
        layer.beta.copy_(torch.tensor([0.1, -0.2, 0.3]))
        layer.running_var.copy_(torch.tensor([0.9, 4.1, 0.05]))
    layer.train(training)
    xn = x.numpy()
    expect = np.empty_like(xn)
    for c in range(3):
        bvar = xn[:, c].var() if training else layer.running_var[c].item()
        for n in range(4):
            ivar = xn[n, c].var()
            den = np.maximum(np.sqrt(bvar + 1e-5), layer.v1[c].item() * xn[n, c] + np.sqrt(ivar + 1e-5))
            expect[n, c] = xn[n, c] / den * layer.gamma[c].item() + layer.beta[c].item()
    old = layer.running_var.clone()
    assert np.allclose(layer(x).detach().numpy(), expect, atol=1e-13)
    if training:
        unbiased = torch.from_numpy(xn.transpose(1, 0, 2, 3).reshape(3, -1).var(axis=1, ddof=1))
        assert torch.allclose(layer.running_var, 0.9 * old + 0.1 * unbiased, atol=1e-14)
    else:
        assert torch.equal(layer.running_var, old)
