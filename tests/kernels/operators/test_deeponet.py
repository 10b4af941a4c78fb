import math

import torch
from torch import nn

from mlip.kernels.operators.deeponet import DeepONet, mlp


class HatAntiderivativeTrunk(nn.Module):
    """t_j(y) = int_0^y phi_j(s) ds for the piecewise-linear hat basis phi_j on m sensors.

    With the identity as branch (b_j = u(x_j)) the DeepONet computes the exact
    antiderivative of the piecewise-linear interpolant of u.
    """

    def __init__(self, m):
        super().__init__()
        self.x = torch.linspace(0, 1, m, dtype=torch.float64)
        self.h = 1.0 / (m - 1)

    @staticmethod
    def _hat_integral(t):
        # int_{-inf}^t max(0, 1 - |s|) ds
        return torch.where(
            t <= -1, 0.0, torch.where(t <= 0, 0.5 * (t + 1) ** 2, torch.where(t <= 1, 1 - 0.5 * (1 - t) ** 2, 1.0))
        )

    def forward(self, y):
        t = (y - self.x) / self.h  # (..., 1) - (m,) -> (..., m)
        return self.h * (self._hat_integral(t) - self._hat_integral(-self.x / self.h))


def exact_net(m):
    return DeepONet(nn.Identity(), HatAntiderivativeTrunk(m), bias=False)


def test_constructed_pair_gives_exact_antiderivative_of_constants():
    m = 17
    net = exact_net(m)
    c = torch.tensor([[-2.5], [0.0], [1.0], [3.25]], dtype=torch.float64)
    u = c.expand(-1, m)
    y = torch.rand(40, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = net(u, y)
    assert out.shape == (4, 40)
    assert torch.allclose(out, c * y[:, 0], atol=1e-13, rtol=0)


def test_constructed_pair_is_exact_for_linear_inputs():
    # Piecewise-linear interpolation is exact for a + b x, so G(u)(y) = a y + b y^2 / 2.
    m = 9
    net = exact_net(m)
    x = torch.linspace(0, 1, m, dtype=torch.float64)
    a = torch.tensor([1.0, -0.5], dtype=torch.float64)[:, None]
    b = torch.tensor([2.0, 3.0], dtype=torch.float64)[:, None]
    u = a + b * x
    gen = torch.Generator().manual_seed(1)
    y_shared = torch.rand(30, 1, generator=gen, dtype=torch.float64)
    out = net(u, y_shared)
    assert torch.allclose(out, a * y_shared[:, 0] + 0.5 * b * y_shared[:, 0] ** 2, atol=1e-13, rtol=0)
    y_own = torch.rand(2, 30, 1, generator=gen, dtype=torch.float64)
    out = net(u, y_own)
    assert torch.allclose(out, a * y_own[..., 0] + 0.5 * b * y_own[..., 0] ** 2, atol=1e-13, rtol=0)


def _antiderivative_data(n, m, points, gen, k_max=4):
    # u(x) = a0 + sum_k a_k sin(2 pi k x) + b_k cos(2 pi k x), coefficients ~ N(0, 1/k^2);
    # G(u)(y) = int_0^y u in closed form.
    k = torch.arange(1, k_max + 1, dtype=torch.float64)
    w = 2 * math.pi * k
    a0 = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    a = torch.randn(n, k_max, generator=gen, dtype=torch.float64) / k
    b = torch.randn(n, k_max, generator=gen, dtype=torch.float64) / k
    xs = torch.linspace(0, 1, m, dtype=torch.float64)[:, None]
    u = a0 + (a[:, None] * torch.sin(w * xs) + b[:, None] * torch.cos(w * xs)).sum(-1)
    y = torch.rand(n, points, 1, generator=gen, dtype=torch.float64)
    g = a0 * y[..., 0] + (a[:, None] * (1 - torch.cos(w * y)) / w + b[:, None] * torch.sin(w * y) / w).sum(-1)
    return u.float(), y.float(), g.float()


def test_learns_antiderivative_operator_to_8_percent():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m, p, steps = 32, 32, 1000
    net = DeepONet(mlp([m, 64, 64, p]), mlp([1, 64, 64, p], activate_last=True))
    u, y, g = _antiderivative_data(2000, m, 16, gen)
    ut, yt, gt = _antiderivative_data(500, m, 50, gen)

    def rel_err():
        with torch.no_grad():
            return ((net(ut, yt) - gt).norm() / gt.norm()).item()

    before = rel_err()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, u.shape[0], (256,), generator=gen)
        loss = ((net(u[idx], y[idx]) - g[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    after = rel_err()
    assert before > 0.5
    assert after < 0.08, after
