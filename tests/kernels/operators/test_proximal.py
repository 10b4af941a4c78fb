import pytest
import torch

from mlip.kernels.operators.proximal import LearnedProximalNetwork


@pytest.mark.parametrize("lam", [0.0, 0.5, 3.0])
def test_quadratic_potential_gives_prox_of_ridge(lam):
    # psi = ||y||^2 / (2 (1 + lam)) is alpha ||y||^2 with alpha = 1 / (2 (1 + lam)),
    # and grad psi = y / (1 + lam) = prox of (lam / 2) ||x||^2.
    net = LearnedProximalNetwork(5, hidden=8, depth=3, alpha=1 / (2 * (1 + lam)), dtype=torch.float64)
    with torch.no_grad():
        net.output_weight.zero_()
    y = torch.randn(20, 5, dtype=torch.float64)
    assert torch.allclose(net(y), y / (1 + lam), atol=1e-14, rtol=0)


def test_gradient_matches_finite_differences_of_the_potential():
    torch.manual_seed(0)
    net = LearnedProximalNetwork(3, hidden=16, depth=3, alpha=0.1, beta=2.0, dtype=torch.float64)
    y = torch.randn(4, 3, dtype=torch.float64)
    f = net(y)
    eps = 1e-6
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = eps
        fd = (net.potential(y + e) - net.potential(y - e)) / (2 * eps)
        assert torch.allclose(f[:, i], fd.detach(), atol=1e-8)


def test_potential_is_convex_and_gradient_is_monotone():
    torch.manual_seed(1)
    net = LearnedProximalNetwork(6, hidden=32, depth=4, alpha=0.0, beta=5.0, dtype=torch.float64)
    # Scramble weights, including negative values that the clamp must neutralise.
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    x = 2 * torch.randn(500, 6, dtype=torch.float64)
    y = 2 * torch.randn(500, 6, dtype=torch.float64)
    inner = ((net(x) - net(y)) * (x - y)).sum(-1)
    assert (inner >= -1e-10).all()
    mid = net.potential(0.5 * (x + y))
    assert (mid <= 0.5 * (net.potential(x) + net.potential(y)) + 1e-10).all()
    assert inner.max() > 1e-3  # not trivially zero


def test_strong_monotonicity_with_alpha():
    torch.manual_seed(2)
    alpha = 0.3
    net = LearnedProximalNetwork(4, hidden=16, depth=2, alpha=alpha, dtype=torch.float64)
    x, y = torch.randn(200, 4, dtype=torch.float64), torch.randn(200, 4, dtype=torch.float64)
    inner = ((net(x) - net(y)) * (x - y)).sum(-1)
    assert (inner >= 2 * alpha * ((x - y) ** 2).sum(-1) - 1e-10).all()


def test_training_graph_reaches_the_parameters():
    net = LearnedProximalNetwork(3, hidden=8, depth=2, alpha=0.5, dtype=torch.float64)
    loss = (net(torch.randn(10, 3, dtype=torch.float64)) ** 2).sum()
    loss.backward()
    assert net.input_layers[0].weight.grad.abs().sum() > 0
    assert net.output_weight.grad.abs().sum() > 0
