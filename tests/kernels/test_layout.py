"""Component-major blocks (mlip.kernels.tp.layout): exact round trip, contiguous blocks,
first and second derivatives."""

import pytest
import torch

from mlip.kernels.tp.layout import RowPlan

F64 = torch.float64


def test_round_trip_and_rows():
    plan = RowPlan([1, 3, 5], 4)
    x = torch.randn(6, plan.width, dtype=F64)
    blocks = plan.to_rows(x)
    assert [b.shape for b in blocks] == [torch.Size([d, 6, 4]) for d in plan.dims]
    assert all(b.is_contiguous() for b in blocks)
    assert torch.equal(plan.from_rows(blocks), x)
    # row r of a block is component r of that irrep for every sample and channel
    assert torch.equal(blocks[2][4], x[:, 4 * 4 :].reshape(6, 4, 5)[:, :, 4])


def test_gradients():
    plan = RowPlan([1, 3, 5], 4)
    x = torch.randn(3, plan.width, dtype=F64, requires_grad=True)
    scales = [torch.randn(d, 3, 4, dtype=F64) for d in plan.dims]

    def f(x):
        return plan.from_rows([b.square() * s for b, s in zip(plan.to_rows(x), scales)])

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    g = torch.autograd.grad(plan.to_rows(x)[0].sum(), x)[0]  # unused blocks get zero gradient
    assert g.sum() == plan.dims[0] * 3 * 4


def test_stacked_rows_round_trip_and_gradients():
    """``stack`` puts the blocks of ``to_rows`` one after the other in one [D, N, C] tensor;
    ``unstack`` inverts it; first and second derivatives of both."""
    plan = RowPlan([1, 3, 5], 4)
    x = torch.randn(6, plan.width, dtype=F64)
    t = plan.stack(x)
    assert t.shape == (9, 6, 4) and t.is_contiguous()
    assert torch.equal(t, torch.cat(plan.to_rows(x), dim=0))
    assert torch.equal(plan.unstack(t), x)
    xg = x[:3].clone().requires_grad_()
    scale = torch.randn(9, 3, 4, dtype=F64)

    def f(x):
        return plan.unstack(plan.stack(x).square() * scale)

    assert torch.autograd.gradcheck(f, (xg,))
    assert torch.autograd.gradgradcheck(f, (xg,))
    with pytest.raises(ValueError, match="expected 9 stacked rows"):
        plan.unstack(t[:4])
