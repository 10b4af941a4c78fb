import math

import pytest
import torch

from mlip.kernels.operators.turboquant import TurboQuantMSE, TurboQuantProd, lloyd_max_codebook, random_rotation


def test_gaussian_codebook_matches_max_1960_table():
    # Max (1960), optimum quantiser for N(0,1): 1 bit +-sqrt(2/pi);
    # 2 bits +-0.4528, +-1.510; 3 bits 0.2451, 0.7560, 1.344, 2.152.
    d = 256
    s = math.sqrt(d)
    c1 = lloyd_max_codebook(1, d, density="gaussian") * s
    assert torch.allclose(c1, torch.tensor([-1.0, 1.0], dtype=torch.float64) * math.sqrt(2 / math.pi), atol=1e-6)
    c2 = lloyd_max_codebook(2, d, density="gaussian") * s
    assert torch.allclose(c2[2:], torch.tensor([0.4528, 1.510], dtype=torch.float64), atol=1e-3)
    c3 = lloyd_max_codebook(3, d, density="gaussian") * s
    assert torch.allclose(c3[4:], torch.tensor([0.2451, 0.7560, 1.344, 2.152], dtype=torch.float64), atol=1e-3)


def test_random_rotation_is_orthogonal():
    q = random_rotation(64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(q @ q.T, torch.eye(64, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("bits,expected", [(1, 0.363), (2, 0.117), (3, 0.034), (4, 0.0095)])
def test_mse_distortion_unit_vectors_d256(bits, expected):
    d = 256
    gen = torch.Generator().manual_seed(1234 + bits)
    x = torch.randn(2000, d, generator=gen, dtype=torch.float64)
    x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    q = TurboQuantMSE(d, bits, seed=bits)
    code = q.quantize(x)
    assert int(code.indices.max()) < 2**bits
    dist = ((x - q.dequantize(code)) ** 2).sum(-1).mean().item()
    assert abs(dist - expected) / expected < 0.05, dist


def test_mse_quantiser_keeps_the_norm_of_non_unit_vectors():
    # Data seed differs from the rotation seed: the rotation is drawn from the
    # same generator stream, and shared draws would correlate x with it.
    gen = torch.Generator().manual_seed(99)
    x = 7.0 * torch.randn(500, 128, generator=gen, dtype=torch.float64)
    q = TurboQuantMSE(128, 3, seed=0)
    rel = ((x - q(x)) ** 2).sum(-1) / (x**2).sum(-1)
    assert abs(rel.mean().item() - 0.034) / 0.034 < 0.05


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_prod_inner_product_is_unbiased(bits):
    d, trials = 64, 1500
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(d, generator=gen, dtype=torch.float64)
    x = x / x.norm()
    y = torch.randn(d, generator=gen, dtype=torch.float64)
    y = 0.6 * x + y / y.norm()  # correlated with x so a multiplicative bias is visible
    true = torch.dot(x, y).item()
    est, mse_only = [], []
    for t in range(trials):
        q = TurboQuantProd(d, bits, seed=10_000 * bits + t)
        est.append(torch.dot(y, q(x)).item())
        if bits == 1:
            mse_only.append(torch.dot(y, TurboQuantMSE(d, 1, seed=t)(x)).item())
    est = torch.tensor(est, dtype=torch.float64)
    se = est.std().item() / math.sqrt(trials)
    assert abs(est.mean().item() - true) < 4 * se, (est.mean().item(), true, se)
    if bits == 1:
        # The 1-bit MSE quantiser shrinks inner products by 2/pi (paper, Sec. 3.2);
        # the same statistic detects that bias, so the check above has power.
        m = torch.tensor(mse_only, dtype=torch.float64)
        assert abs(m.mean().item() - true) > 10 * m.std().item() / math.sqrt(trials)
        assert abs(m.mean().item() / true - 2 / math.pi) < 0.02


@pytest.mark.parametrize("bits", [2, 3])
def test_prod_qjl_part_is_unbiased_for_a_fixed_rotation(bits):
    # Conditional on the rotation, E_S <y, x_hat> = <y, x_mse> + <y, r> = <y, x>.
    # y along the residual makes any error in the QJL scale visible.
    d, trials = 64, 1500
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(d, generator=gen, dtype=torch.float64)
    x = x / x.norm()
    r = x - TurboQuantMSE(d, bits - 1, seed=5)(x)
    y = r / r.norm() + 0.3 * x
    true = torch.dot(x, y).item()
    est = torch.tensor(
        [torch.dot(y, TurboQuantProd(d, bits, seed=5, sketch_seed=t)(x)).item() for t in range(trials)],
        dtype=torch.float64,
    )
    se = est.std().item() / math.sqrt(trials)
    assert abs(est.mean().item() - true) < 4 * se, (est.mean().item(), true, se)
    # Power: the QJL term carries <y, r> = ||r||, many standard errors away from 0.
    assert r.norm().item() > 15 * se
