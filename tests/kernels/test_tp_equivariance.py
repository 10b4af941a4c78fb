"""Every backend x mode is equivariant under rotations and inversion, L up to 4."""

import pytest
import torch
from tp_cases import BACKENDS, case, options

from mlip.kernels import TensorProduct
from mlip.kernels.testing import equivariance_error

TOL = {torch.float64: 1e-11, torch.float32: 2e-5}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("L", [1, 2, 4])
@pytest.mark.parametrize("mode", ["channelwise", "elementwise"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_equivariance(backend, mode, L, dtype):
    in1, in2, out = case(mode, L, C=2)
    tp = TensorProduct(in1, in2, out, mode=mode, backend=backend, **options(backend))
    w = torch.randn(5, tp.weight_numel, dtype=dtype, generator=torch.Generator().manual_seed(L))
    err = equivariance_error(lambda a, b: tp(a, b, w), [in1, in2], out, n=5, dtype=dtype)
    assert err < TOL[dtype]


@pytest.mark.parametrize("backend", BACKENDS)
def test_equivariance_unnatural_parity(backend):
    """Pseudo-tensors (1e, 0o) exercise the parity bookkeeping, incl. gaunt/grid class splitting."""
    in1, in2, out = "2x0e+2x1o+2x1e+2x0o", "0e+1o+1e", "2x0e+2x1o+2x1e+2x0o+2x2e"
    tp = TensorProduct(in1, in2, out, backend=backend, **options(backend))
    w = torch.randn(3, tp.weight_numel, dtype=torch.float64)
    assert equivariance_error(lambda a, b: tp(a, b, w), [in1, in2], out, n=3) < 1e-11


def test_equivariance_check_catches_a_broken_product():
    """The checker itself must fail on a non-equivariant map (guards against a vacuous test)."""
    in1, in2, out = case("channelwise", 2, C=2)
    tp = TensorProduct(in1, in2, out)
    w = torch.randn(tp.weight_numel, dtype=torch.float64)
    broken = lambda a, b: tp(a, b, w) + a.roll(1, dims=1)  # noqa: E731
    assert equivariance_error(broken, [in1, in2], out) > 1e-2
