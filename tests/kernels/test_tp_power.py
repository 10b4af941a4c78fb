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
