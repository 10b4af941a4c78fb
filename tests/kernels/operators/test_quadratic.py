import torch
from torch import nn

from mlip.kernels.operators.quadratic import QuadraticLinear, quadratic_param_groups


def test_relinear_initialisation_equals_the_linear_layer_exactly():
    torch.manual_seed(0)
    q = QuadraticLinear(7, 5, dtype=torch.float64)
    lin = nn.Linear(7, 5, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(q.weight_r)
        lin.bias.copy_(q.bias_r)
    x = 10 * torch.randn(4, 3, 7, dtype=torch.float64)
    assert torch.equal(q(x), lin(x))


def test_quadratic_terms_have_the_stated_form():
    q = QuadraticLinear(2, 1, dtype=torch.float64)
    with torch.no_grad():
        q.weight_r.copy_(torch.tensor([[1.0, 2.0]]))
        q.bias_r.fill_(0.5)
        q.weight_g.copy_(torch.tensor([[-1.0, 3.0]]))
        q.bias_g.fill_(2.0)
        q.weight_b.copy_(torch.tensor([[4.0, -2.0]]))
        q.bias_c.fill_(-1.0)
    x = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
    # (1.5 - 1 + .5)(-1.5 - 1.5 + 2) + (4 * 2.25 - 2 * .25) - 1 = -1 + 8.5 - 1
    assert q(x).item() == 6.5


def test_param_groups_scale_only_the_quadratic_terms():
    net = nn.Sequential(QuadraticLinear(3, 4), nn.Tanh(), QuadraticLinear(4, 2), nn.Linear(2, 1))
    groups = quadratic_param_groups(net, lr=1e-2, quad_lr_scale=1e-3)
    assert groups[0]["lr"] == 1e-2 and abs(groups[1]["lr"] - 1e-5) < 1e-20
    assert len(groups[0]["params"]) == 2 + 2 + 2 and len(groups[1]["params"]) == 4 + 4
    q = net[0]
    ids = {id(p) for p in groups[1]["params"]}
    assert {id(q.weight_g), id(q.bias_g), id(q.weight_b), id(q.bias_c)} <= ids
    assert id(q.weight_r) not in ids
    own = q.param_groups(0.1, 0.5)
    assert own[1]["lr"] == 0.05 and len(own[1]["params"]) == 4
    # The groups feed an optimizer and, after one step, the layer is no longer linear.
    opt = torch.optim.SGD(groups)
    x = torch.randn(16, 3)
    net(x).square().sum().backward()
    opt.step()
    assert q.weight_g.abs().sum() > 0 and q.weight_b.abs().sum() > 0
