import math

import pytest
import torch
from torch import nn

from mlip.kernels.operators.orthoreg import orthoreg


def orthonormal(rows, cols, seed):
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def pair(deltas, seed=0):
    torch.manual_seed(seed)
    shapes = [d.shape for d in deltas]
    pre = nn.Sequential(*[nn.Linear(s[1], s[0], dtype=torch.float64) for s in shapes])
    ft = nn.Sequential(*[nn.Linear(s[1], s[0], dtype=torch.float64) for s in shapes])
    ft.load_state_dict(pre.state_dict())
    with torch.no_grad():
        for layer, d in zip(ft, deltas):
            layer.weight.add_(d)
            layer.bias.add_(1.0)  # biases are not matrices and must not count
    return ft, pre


def test_zero_for_orthonormal_updates():
    ft, pre = pair([orthonormal(8, 8, 0), orthonormal(12, 5, 1)])
    assert orthoreg(ft, pre).item() < 1e-13
    assert orthoreg(ft.state_dict(), pre.state_dict()).item() < 1e-13


def test_known_positive_value():
    # dW = 2Q (square): dW^T dW - I = 3I, ||3I||_F = 3 sqrt(n).  dW = 0: ||-I||_F = sqrt(n).
    n = 6
    ft, pre = pair([2 * orthonormal(n, n, 3), torch.zeros(4, n, dtype=torch.float64)])
    assert abs(orthoreg(ft, pre).item() - (3 * math.sqrt(n) + math.sqrt(4))) < 1e-12


def test_gram_side_for_wide_matrices():
    q = orthonormal(9, 4, 2).T  # (4, 9): orthonormal rows
    ft, pre = pair([q])
    assert orthoreg(ft, pre).item() < 1e-13  # auto picks dW dW^T
    # The literal dW^T dW (9 x 9) has rank 4: ||P - I||_F = sqrt(9 - 4).
    assert abs(orthoreg(ft, pre, gram="columns").item() - math.sqrt(5)) < 1e-12
    assert orthoreg(ft, pre, gram="rows").item() < 1e-13


def test_gradient_flows_and_matches_analytic():
    gen = torch.Generator().manual_seed(4)
    d = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    ft, pre = pair([d])
    r = orthoreg(ft, pre)
    r.backward()
    g = d.T @ d - torch.eye(5, dtype=torch.float64)
    # d/dW ||dW^T dW - I||_F = 2 dW (G - I) / ||G - I||_F
    expect = 2 * d @ g / torch.linalg.matrix_norm(g)
    assert torch.allclose(ft[0].weight.grad, expect, atol=1e-12)
    assert pre[0].weight.grad is None


def test_include_filter_and_errors():
    ft, pre = pair([orthonormal(4, 4, 0), 3 * orthonormal(4, 4, 1)])
    only_first = orthoreg(ft, pre, include=lambda name, w: name.startswith("0."))
    assert only_first.item() < 1e-13
    with pytest.raises(ValueError, match="no weight matrix"):
        orthoreg(ft, {"other.weight": torch.zeros(4, 4)})
