"""``cg`` reproduces e3nn's o3.TensorProduct with the same weights."""

import pytest
import torch
from e3nn import o3
from tp_cases import case, default_dtype

from mlip.errors import ConfigError
from mlip.kernels import TensorProduct

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def reference(tp, dtype):
    with default_dtype(dtype):
        return o3.TensorProduct(tp.irreps_in1, tp.irreps_in2, tp.irreps_out, tp.impl.instructions(),
                                shared_weights=False, internal_weights=False)


CASES = [
    ("channelwise",) + case("channelwise", 3, C=4),
    ("channelwise",) + case("channelwise", 4, C=2),
    ("elementwise",) + case("elementwise", 3, C=4),
    # l_max 1 (the pair 1o x 1o has the single path to 0e: the row-wise dot product) and a
    # scalar output (the last many-body product: every l x l pair is a dot product)
    ("channelwise",) + case("channelwise", 1, C=4),
    ("elementwise",) + case("elementwise", 1, C=4),
    ("elementwise", "4x0e+4x1o+4x2e", "4x0e+4x1o+4x2e", "4x0e"),
    # unnatural parity, repeated degrees and unsorted irreps: layout bookkeeping
    ("channelwise", "3x1e+3x0e+3x2o+3x1o", "1o+0e+1e", "3x2e+3x1o+3x0e+3x1e+3x0o"),
    ("elementwise", "3x1e+3x0e+3x1o", "3x1o+3x2e+3x0o", "3x1o+3x2e+3x0e+3x1e"),
]


@pytest.mark.parametrize("route", ["auto", "pairwise", "per_sample"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode,in1,in2,out", CASES)
def test_cg_equals_e3nn(mode, in1, in2, out, dtype, route):
    if mode == "elementwise" and route == "per_sample":
        with pytest.raises(ValueError, match="per_sample.*channelwise"):
            TensorProduct(in1, in2, out, mode=mode, backend="cg", route=route)
        return
    tp = TensorProduct(in1, in2, out, mode=mode, backend="cg", route=route)
    ref = reference(tp, dtype)
    assert tp.weight_numel == ref.weight_numel
    g = torch.Generator().manual_seed(0)
    n = 11
    x1 = torch.randn(n, tp.irreps_in1.dim, generator=g, dtype=dtype)
    x2 = torch.randn(n, tp.irreps_in2.dim, generator=g, dtype=dtype)
    w = torch.randn(n, tp.weight_numel, generator=g, dtype=dtype)
    y, y_ref = tp(x1, x2, w), ref(x1, x2, w)
    scale = y_ref.abs().max()
    assert (y - y_ref).abs().max() <= TOL[dtype] * scale
    # shared weights
    y, y_ref = tp(x1, x2, w[0]), ref(x1, x2, w[0].expand(n, -1))
    assert (y - y_ref).abs().max() <= TOL[dtype] * scale


@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("mode,route", [("channelwise", "pairwise"), ("channelwise", "per_sample"),
                                        ("elementwise", "auto")])
def test_cg_gradients_equal_e3nn(mode, route, L):
    dtype = torch.float64
    tp = TensorProduct(*case(mode, L, C=3), mode=mode, route=route)
    ref = reference(tp, dtype)
    dims = (tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel)
    ins = [torch.randn(6, d, dtype=dtype, requires_grad=True) for d in dims]
    grads = torch.autograd.grad(tp(*ins).sin().sum(), ins)
    grads_ref = torch.autograd.grad(ref(*ins).sin().sum(), ins)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_auto_route_and_bad_route():
    small = TensorProduct(*case("channelwise", 1, C=4), mode="channelwise").impl
    large = TensorProduct(*case("channelwise", 5, C=4), mode="channelwise").impl
    assert small.use_pairs and not large.use_pairs
    with pytest.raises(ConfigError, match="cg: option route must be"):
        TensorProduct(*case("channelwise", 1, C=4), mode="channelwise", route="fast")
    with pytest.raises(ConfigError, match="route='per_sample' needs mode='channelwise'"):
        TensorProduct(*case("elementwise", 1, C=4), mode="elementwise", route="per_sample")
