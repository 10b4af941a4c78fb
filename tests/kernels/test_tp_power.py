"""SymmetricPower equals chained grid products and is equivariant."""

import pytest
import torch

from mlip.errors import KernelInputError
from mlip.kernels import TensorProduct
from mlip.kernels.testing import equivariance_error
from mlip.kernels.tp.power import SymmetricPower

F64 = torch.float64


def test_powers_equal_chained_gaunt_products():
    C, irr = 3, "3x0e+3x1o+3x2e"
    sp = SymmetricPower(irr, irr, 3)
    n_in = n_out = 3
    x = torch.randn(4, 27, dtype=F64)
    w_in = torch.randn(n_in, C, dtype=F64)
    big = "+".join(f"{C}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(5))  # f^2 up to degree 4
    sq = TensorProduct(irr, irr, big, mode="elementwise", backend="gaunt")
    cube = TensorProduct(big, irr, irr, mode="elementwise", backend="gaunt")
    one = lambda n: torch.ones(n, C, dtype=F64)  # noqa: E731
    for k in range(3):
        w_out = torch.zeros(3, n_out, C, dtype=F64)
        w_out[k] = 1
        y = sp(x, torch.cat([w_in, w_out.view(-1, C)]).flatten())
        if k == 0:
            ref = TensorProduct(irr, "0e", irr, backend="gaunt")(
                x, torch.ones(4, 1, dtype=F64), w_in.flatten()
            )  # a product with the constant 1: one weight per (output irrep, channel), here w_in
        elif k == 1:
            ref = TensorProduct(irr, irr, irr, mode="elementwise", backend="gaunt")(
                x, x, torch.cat([w_in, w_in, one(n_out)]).flatten()
            )
        else:
            f2 = sq(x, x, torch.cat([w_in, w_in, one(5)]).flatten())
            ref = cube(f2, x, torch.cat([one(5), w_in, one(n_out)]).flatten())
        torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)


def test_power_equivariant_and_validates():
    irr = "2x0e+2x1o+2x2e+2x3o"
    sp = SymmetricPower(irr, "2x0e+2x1o+2x2e", 3)
    w = torch.randn(sp.weight_numel, dtype=F64)
    assert equivariance_error(lambda x: sp(x, w), [irr], "2x0e+2x1o+2x2e") < 1e-11
    with pytest.raises(KernelInputError, match="natural-parity"):
        SymmetricPower("2x0e+2x1e", "2x0e", 2)
    with pytest.raises(KernelInputError, match="correlation must be >= 1"):
        SymmetricPower(irr, "2x0e", 0)
    with pytest.raises(KernelInputError, match=r"x: expected shape \[N, 32\]"):
        sp(torch.randn(3, 31, dtype=F64), w)


def test_chunked_powers_equal_one_pass():
    """CPU chunks change nothing: outputs, first and second derivatives, per-sample and shared
    weights, N not a multiple of the chunk; the automatic chunk follows the grid size."""
    irr = "3x0e+3x1o+3x2e"
    whole = SymmetricPower(irr, "3x0e+3x1o", 3, chunk_size=0)
    parts = SymmetricPower(irr, "3x0e+3x1o", 3, chunk_size=4)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(11, whole.irreps_in.dim, dtype=F64, generator=g, requires_grad=True)
    for w in (torch.randn(11, whole.weight_numel, dtype=F64, generator=g),
              torch.randn(whole.weight_numel, dtype=F64, generator=g)):
        w.requires_grad_()
        ys = [m(x, w) for m in (whole, parts)]
        torch.testing.assert_close(ys[1], ys[0], rtol=1e-12, atol=1e-12)
        grads = [torch.autograd.grad(y.sin().sum(), (x, w), create_graph=True) for y in ys]
        for a, b in zip(*grads):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        gg = [torch.autograd.grad(gr[0].square().sum(), (x, w)) for gr in grads]
        for a, b in zip(*gg):
            torch.testing.assert_close(b, a, rtol=1e-11, atol=1e-11)
    from mlip.kernels.tp.interface import CHUNK_FLOATS

    auto = SymmetricPower(irr, irr, 3)
    assert auto.chunk_size == max(16, CHUNK_FLOATS // (3 * auto.resolution[0] * auto.resolution[1]))
    with pytest.raises(KernelInputError, match="chunk_size"):
        SymmetricPower(irr, irr, 3, chunk_size=-2)
