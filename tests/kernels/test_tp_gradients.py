"""First and second derivatives of every backend (forces need them during training)."""

import pytest
import torch
from tp_cases import BACKENDS, case, options

from mlip.kernels import TensorProduct
from mlip.kernels.tp.power import SymmetricPower

# cg's channelwise auto route at L=2 is the pairwise one: check the per-sample route too
CASES = [(b, m, options(b)) for b in BACKENDS for m in ("channelwise", "elementwise")]
CASES.append(("cg", "channelwise", {"route": "per_sample"}))


@pytest.mark.parametrize("backend,mode,opts", CASES)
def test_gradcheck(backend, mode, opts, device):
    tp = TensorProduct(*case(mode, 2, C=2), mode=mode, backend=backend, **opts).to(device)
    g = torch.Generator().manual_seed(0)
    ins = [
        torch.randn(3, d, dtype=torch.float64, generator=g).to(device).requires_grad_()
        for d in (tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel)
    ]
    assert torch.autograd.gradcheck(tp, ins)
    assert torch.autograd.gradgradcheck(tp, ins)


def test_symmetric_power_gradcheck(device):
    sp = SymmetricPower("2x0e+2x1o+2x2e", "2x0e+2x1o", 3).to(device)
    x = torch.randn(3, 18, dtype=torch.float64).to(device).requires_grad_()
    w = torch.randn(3, sp.weight_numel, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(sp, (x, w))
    assert torch.autograd.gradgradcheck(sp, (x, w))
