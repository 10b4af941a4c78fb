"""Component-major row blocks (mlip.kernels.tp.layout): exact round trip, contiguous
gradients, first and second derivatives."""

import pytest
import torch

from mlip.kernels.tp.layout import RowPlan

F64 = torch.float64


def _plans():
    dims = [1, 3, 5]
    return [RowPlan.per_irrep(dims, 4), RowPlan(dims, 4, [[(0, 0, 2), (1, 0, 2), (2, 0, 2)], [(1, 1, 2), (2, 1, 2)]])]


@pytest.mark.parametrize("plan", _plans(), ids=["per_irrep", "even_odd"])
def test_round_trip_and_rows(plan):
    x = torch.randn(6, plan.width, dtype=F64)
    blocks = plan.to_rows(x)
    assert [b.shape for b in blocks] == [torch.Size([r, 6, 4]) for r in plan.rows]
    assert all(b.is_contiguous() for b in blocks)
    assert torch.equal(plan.from_rows(blocks), x)
    # row r of a per-irrep block is component r of that irrep for every sample and channel
    if len(plan.rows) == 3:
        assert torch.equal(blocks[2][4], x[:, 4 * 4 :].reshape(6, 4, 5)[:, :, 4])


@pytest.mark.parametrize("plan", _plans(), ids=["per_irrep", "even_odd"])
def test_gradients(plan):
    x = torch.randn(3, plan.width, dtype=F64, requires_grad=True)
    scales = [torch.randn(r, 3, 4, dtype=F64) for r in plan.rows]

    def f(x):
        return plan.from_rows([b.square() * s for b, s in zip(plan.to_rows(x), scales)])

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    g = torch.autograd.grad(plan.to_rows(x)[0].sum(), x)[0]  # unused blocks get zero gradient
    assert g.sum() == plan.rows[0] * 3 * 4


def test_plan_must_cover_every_component_once():
    with pytest.raises(ValueError, match="appears twice"):
        RowPlan([3], 2, [[(0, 0, 1)], [(0, 1, 2)]])
    with pytest.raises(ValueError, match="once"):
        RowPlan([3], 2, [[(0, 0, 2)]])
