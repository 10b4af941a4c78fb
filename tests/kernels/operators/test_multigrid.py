import math

import pytest
import torch

from mlip.kernels.operators.multigrid import MultigridVCycle, damped_jacobi_step, laplacian_5pt


def eigenmode(n, j, k):
    h = 1.0 / (n + 1)
    x = torch.arange(1, n + 1, dtype=torch.float64) * h
    return torch.outer(torch.sin(j * math.pi * x), torch.sin(k * math.pi * x))[None, None]


def laplace_eigenvalue(n, j, k):
    h = 1.0 / (n + 1)
    return 4 / h**2 * (math.sin(j * math.pi * h / 2) ** 2 + math.sin(k * math.pi * h / 2) ** 2)


@pytest.mark.parametrize("j,k", [(1, 1), (3, 5), (10, 2), (15, 15), (31, 28)])
def test_eigenmode_is_eigenvector_of_5pt_laplacian(j, k):
    n = 31
    v = eigenmode(n, j, k)
    assert torch.allclose(laplacian_5pt(v, 1 / (n + 1)), laplace_eigenvalue(n, j, k) * v, atol=1e-9, rtol=1e-12)


@pytest.mark.parametrize("omega", [2 / 3, 0.8, 1.0])
@pytest.mark.parametrize("j,k", [(1, 1), (3, 5), (10, 2), (15, 15), (31, 28)])
def test_one_smoothing_step_shrinks_eigenmode_error_by_analytic_factor(j, k, omega):
    levels = 5
    n = 2**levels - 1
    h = 1.0 / (n + 1)
    gen = torch.Generator().manual_seed(j * 100 + k)
    u_star = torch.randn(2, 1, n, n, generator=gen, dtype=torch.float64)
    f = laplacian_5pt(u_star, h)
    err = eigenmode(n, j, k)
    u0 = u_star - err
    factor = 1 - omega * laplace_eigenvalue(n, j, k) / (4 / h**2)
    mg = MultigridVCycle.poisson(levels, omega=omega, dtype=torch.float64)
    for u1 in (mg.smooth(0, u0, f), damped_jacobi_step(u0, f, h, omega)):
        assert torch.allclose(u_star - u1, factor * err.expand_as(u1), atol=1e-12, rtol=0)


@pytest.mark.parametrize("j,k", [(1, 1), (2, 5), (7, 3)])
def test_full_weighting_restricts_eigenmode_with_cos2_factor(j, k):
    levels = 5
    n = 2**levels - 1
    h = 1.0 / (n + 1)
    mg = MultigridVCycle.poisson(levels, dtype=torch.float64)
    coarse = mg.R[0](eigenmode(n, j, k))
    factor = math.cos(j * math.pi * h / 2) ** 2 * math.cos(k * math.pi * h / 2) ** 2
    assert torch.allclose(coarse, factor * eigenmode((n - 1) // 2, j, k), atol=1e-13, rtol=0)


def test_bilinear_prolongation_is_exact_for_bilinear_functions():
    levels = 4
    nc = 2 ** (levels - 1) - 1
    mg = MultigridVCycle.poisson(levels, dtype=torch.float64)
    xc = torch.arange(1, nc + 1, dtype=torch.float64) / (nc + 1)
    xf = torch.arange(1, 2 * nc + 2, dtype=torch.float64) / (2 * nc + 2)
    # x*y vanishes on the x=0 / y=0 sides, and interpolation towards the zero
    # boundary at x=1 / y=1 only touches the last fine row; compare inside.
    coarse = torch.outer(xc, xc)[None, None]
    fine = mg.P[0](coarse)[0, 0]
    assert torch.allclose(fine[:-1, :-1], torch.outer(xf, xf)[:-1, :-1], atol=1e-14)


@pytest.mark.parametrize("levels", [4, 5, 6])
def test_poisson_v_cycle_contracts_independently_of_grid(levels):
    n = 2**levels - 1
    mg = MultigridVCycle.poisson(levels, channels=2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(levels)
    u_star = torch.randn(1, 2, n, n, generator=gen, dtype=torch.float64)
    f = laplacian_5pt(u_star, 1.0 / (n + 1))
    u = torch.zeros_like(f)
    e0 = (u - u_star).norm()
    for _ in range(8):
        u = mg(f, u)
    rate = ((u - u_star).norm() / e0).item() ** (1 / 8)
    assert rate < 0.25, rate


def test_learnable_v_cycle_shapes_and_gradients():
    mg = MultigridVCycle(3, 4, coarse_smooth=2, dtype=torch.float64)
    f = torch.randn(2, 3, 15, 15, dtype=torch.float64)
    u = mg(f, torch.randn_like(f))  # non-zero start so every A_l sees a non-zero iterate
    assert u.shape == f.shape
    u.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mg.parameters())
    with pytest.raises(ValueError):
        mg(torch.randn(1, 3, 16, 16, dtype=torch.float64))
