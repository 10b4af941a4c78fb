"""``gaunt`` (FFT) and ``grid`` compute the same Gaunt product; its paths are CG paths times
the analytic Gaunt factor; the grid at the default resolution is exact and a coarser grid
obeys the documented error bound."""

import math

import numpy as np
import pytest
import torch
from tp_cases import GAUNT_BACKENDS, case

from mlip.errors import ConfigError
from mlip.kernels import TensorProduct
from mlip.kernels.sphere import gaunt_factor, gauss_legendre_grid, sh_values, wigner_3j_zero
from mlip.kernels.tp.grid import exact_resolution

F64 = torch.float64


@pytest.mark.parametrize("L", [1, 3, 5])
@pytest.mark.parametrize("mode", ["channelwise", "elementwise"])
def test_gaunt_equals_grid(mode, L):
    in1, in2, out = case(mode, L, C=3)
    a = TensorProduct(in1, in2, out, mode=mode, backend="gaunt")
    b = TensorProduct(in1, in2, out, mode=mode, backend="grid")
    g = torch.Generator().manual_seed(L)
    x1 = torch.randn(7, a.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(7, a.irreps_in2.dim, dtype=F64, generator=g)
    w = torch.randn(7, a.weight_numel, dtype=F64, generator=g)
    ya, yb = a(x1, x2, w), b(x1, x2, w)
    assert (ya - yb).abs().max() < 1e-10 * ya.abs().max()


def test_gaunt_full_product_up_to_2L():
    """Outputs up to L1 + L2 (the full product) also agree."""
    in1, in2, out = case("channelwise", 2, C=2)[0], case("channelwise", 2)[1], "2x0e+2x1o+2x2e+2x3o+2x4e"
    a = TensorProduct(in1, in2, out, backend="gaunt")
    b = TensorProduct(in1, in2, out, backend="grid")
    x1, x2, w = torch.randn(5, 18, dtype=F64), torch.randn(5, 9, dtype=F64), torch.randn(5, a.weight_numel, dtype=F64)
    torch.testing.assert_close(a(x1, x2, w), b(x1, x2, w), rtol=1e-10, atol=1e-12)


def test_wigner_3j_zero_closed_form():
    # known values: (1 1 0;000) = -1/sqrt(3), (1 1 2;000) = sqrt(2/15), (2 2 2;000) = -sqrt(2/35)
    assert math.isclose(wigner_3j_zero(1, 1, 0), -1 / math.sqrt(3))
    assert math.isclose(wigner_3j_zero(1, 1, 2), math.sqrt(2 / 15))
    assert math.isclose(wigner_3j_zero(2, 2, 2), -math.sqrt(2 / 35))
    assert wigner_3j_zero(1, 1, 1) == 0.0


@pytest.mark.parametrize("backend", GAUNT_BACKENDS)
def test_each_gaunt_path_is_cg_path_times_gaunt_factor(backend):
    """Isolate path (l1, l2, l3) with one-hot degree weights and compare with the cg path."""
    C, L = 2, 3
    in1, in2, out = case("channelwise", L, C=C)
    gt = TensorProduct(in1, in2, out, backend=backend)
    cg = TensorProduct(in1, in2, out, backend="cg")
    n1 = n2 = n3 = L + 1
    x1 = torch.randn(4, gt.irreps_in1.dim, dtype=F64)
    x2 = torch.randn(4, gt.irreps_in2.dim, dtype=F64)
    checked = 0
    for k, p in enumerate(cg.impl.paths):
        wg = torch.zeros(n1 + n2 + n3, C, dtype=F64)
        wg[p.i1], wg[n1 + p.i2], wg[n1 + n2 + p.i3] = 1, 1, 1
        wc = torch.zeros(len(cg.impl.paths), C, dtype=F64)
        wc[k] = 1
        y_g = gt(x1, x2, wg.flatten())
        # the cg path carries e3nn's path normalisation sqrt((2l3+1)/fan_in): remove it
        y_c = cg(x1, x2, wc.flatten()) / p.norm
        if (p.l1 + p.l2 + p.l3) % 2:
            assert y_g.abs().max() < 1e-12  # absent from a Gaunt product
            continue
        ratio = (y_g * y_c).sum() / (y_c * y_c).sum()
        assert math.isclose(abs(float(ratio)), gaunt_factor(p.l1, p.l2, p.l3), rel_tol=1e-10)
        torch.testing.assert_close(y_g, ratio * y_c, rtol=1e-10, atol=1e-12)
        checked += 1
    assert checked >= 10


def test_default_resolution_is_smallest_exact():
    assert exact_resolution(3, 3, 3) == (5, 10)
    in1, in2, out = case("elementwise", 3, C=2)
    tp = TensorProduct(in1, in2, out, mode="elementwise", backend="grid")
    assert tp.impl.resolution == (5, 10) and tp.impl.exact
    # one node less in latitude or longitude is no longer exact
    ref = TensorProduct(in1, in2, out, mode="elementwise", backend="gaunt")
    x1, x2 = torch.randn(6, 32, dtype=F64), torch.randn(6, 32, dtype=F64)
    w = torch.randn(ref.weight_numel, dtype=F64)
    for res in [(4, 10), (5, 9)]:
        coarse = TensorProduct(in1, in2, out, mode="elementwise", backend="grid", resolution=res)
        assert not coarse.impl.exact
        assert (coarse(x1, x2, w) - ref(x1, x2, w)).abs().max() > 1e-6


@pytest.mark.parametrize("res", [5, (5,), (5, 0), (5.0, 10), "5x10"])
def test_bad_resolution_is_a_config_error(res):
    with pytest.raises(ConfigError, match=r"grid: option resolution must be \(n_lat, n_lon\)"):
        TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend="grid", resolution=res)
    ok = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend="grid", resolution=[3, 5])
    assert ok.impl.resolution == (3, 5)


@pytest.mark.parametrize("res", [(4, 8), (3, 7), (3, 5)])
def test_coarse_grid_error_bound(res):
    """Degrees l3 <= K - L1 - L2 stay exact; higher ones obey the documented aliasing bound."""
    L, C = 3, 2
    in1, in2, out = case("channelwise", L, C=C)
    exact = TensorProduct(in1, in2, out, backend="gaunt")
    coarse = TensorProduct(in1, in2, out, backend="grid", resolution=res)
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(5, exact.irreps_in1.dim, dtype=F64, generator=g)
    x2 = torch.randn(5, exact.irreps_in2.dim, dtype=F64, generator=g)
    n = 3 * (L + 1)
    w = torch.ones(n * C, dtype=F64)
    err = (coarse(x1, x2, w) - exact(x1, x2, w)).view(5, -1)
    # h = f1 f2 exactly, as coefficients up to degree 2L (gaunt's full product), per channel
    full_out = "+".join(f"{C}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(2 * L + 1))
    full = TensorProduct(in1, in2, full_out, backend="gaunt")
    h = full(x1, x2, torch.ones(full.weight_numel, dtype=F64)).view(5, -1)
    K = min(2 * res[0] - 1, res[1] - 1)
    pts, qw = coarse.impl.points, coarse.impl.quadrature  # the backend's own grid
    off_h = 0
    blocks_h = {}
    for l in range(2 * L + 1):
        blocks_h[l] = h[:, off_h : off_h + C * (2 * l + 1)].view(5, C, 2 * l + 1)
        off_h += C * (2 * l + 1)
    off = 0
    saw_error = False
    for l3 in range(L + 1):
        e = err[:, off : off + C * (2 * l3 + 1)].view(5, C, 2 * l3 + 1)
        off += C * (2 * l3 + 1)
        if l3 <= K - 2 * L:
            assert e.abs().max() < 1e-12
            continue
        cut = K - l3  # degrees of h above this alias into degree l3
        high = [l for l in range(2 * L + 1) if l > cut]
        Y = torch.from_numpy(sh_values(high, pts))  # [P, sum dims]
        coeff = torch.cat([blocks_h[l] for l in high], dim=2)  # [5, C, sum dims]
        vals = coeff @ Y.T  # h_> on the grid
        q = (vals**2 * torch.from_numpy(qw)).sum(-1)  # Q(h_>^2) per sample, channel
        proj = blocks_h[l3].norm(dim=-1) if l3 in high else 0.0
        bound = torch.sqrt((2 * l3 + 1) * q) + proj
        assert (e.norm(dim=-1) <= bound * (1 + 1e-9) + 1e-12).all()
        saw_error = saw_error or e.abs().max() > 1e-8
    assert saw_error  # the coarse grids really are inexact


@pytest.mark.parametrize("backend", GAUNT_BACKENDS)
@pytest.mark.parametrize("mode", ["channelwise", "elementwise"])
def test_no_grad_forward_equals_autograd_forward(backend, mode):
    """The no-grad forward multiplies in place: same numbers, inputs untouched (one irrep,
    where the channel layout is a view of x1, and several)."""
    for in1 in ("3x1o", "3x0e+3x1o+3x2e"):
        in2 = ("0e+1o+2e" if mode == "channelwise" else "3x0e+3x1o+3x2e")
        tp = TensorProduct(in1, in2, "3x0e+3x1o+3x2e", mode=mode, backend=backend)
        g = torch.Generator().manual_seed(3)
        x1 = torch.randn(5, tp.irreps_in1.dim, dtype=F64, generator=g)
        x2 = torch.randn(5, tp.irreps_in2.dim, dtype=F64, generator=g)
        w = torch.randn(5, tp.weight_numel, dtype=F64, generator=g)
        copies = [t.clone() for t in (x1, x2, w)]
        y = tp(x1, x2, w)
        with torch.no_grad():
            y0 = tp(x1, x2, w)
        torch.testing.assert_close(y0, y, rtol=0, atol=0)
        for a, b in zip((x1, x2, w), copies):
            assert torch.equal(a, b)


@pytest.mark.parametrize("backend", GAUNT_BACKENDS)
@pytest.mark.parametrize("in1,in2,out,mode", [
    ("3x0e", "0e+1o+2e", "3x0e+3x1o+3x2e", "channelwise"),  # first interaction of a potential
    ("3x0e+3x1o+3x2e", "0e", "3x0e+3x1o+3x2e", "channelwise"),
    ("3x0e", "3x0e+3x1o+3x2e", "3x2e+3x0e", "elementwise"),
    ("3x0e+3x1o+3x2e", "3x0e", "3x1o", "elementwise"),
    ("3x0o", "0e+1o+1e", "3x0o+3x1e+3x1o", "channelwise"),  # pseudo-scalar: parity classes swap
])
def test_scalar_input_shortcut_equals_transform(backend, in1, in2, out, mode):
    """A degree-0 input is a constant function: the shortcut (no transforms, one weight per
    output irrep and channel) gives the numbers of the full Fourier / grid product whose
    input weights are 1 and whose output weights are the shortcut's, and the same gradients."""
    tp = TensorProduct(in1, in2, out, mode=mode, backend=backend)
    impl = tp.impl
    assert impl.scalar_side is not None
    n1, n2, n3 = len(impl.spec.irs1), len(impl.spec.irs2), len(impl.spec.irs3)
    C = impl.spec.channels
    assert tp.weight_numel == n3 * C
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(6, tp.irreps_in1.dim, dtype=F64, generator=g, requires_grad=True)
    x2 = torch.randn(6, tp.irreps_in2.dim, dtype=F64, generator=g, requires_grad=True)
    w = torch.randn(6, tp.weight_numel, dtype=F64, generator=g, requires_grad=True)
    y = tp(x1, x2, w)
    grads = torch.autograd.grad(y.square().sum(), (x1, x2, w))
    # the same product through the transforms, in the general weight layout
    w_full = torch.cat([torch.ones(6, (n1 + n2) * C, dtype=F64), w], dim=1)
    impl.scalar_side = None
    y0 = impl(x1, x2, w_full)
    grads0 = torch.autograd.grad(y0.square().sum(), (x1, x2, w))
    torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, grads0):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_grid_polar_axis_gives_strided_parity_blocks():
    """The grid's polar axis is e3nn's y: every irrep splits into its even components 0, 2, ...
    and its odd ones 1, 3, ... (the strided blocks the half-grid route reads in place), and the
    rotated grid is the same quadrature (exact for the same degrees)."""
    pts_z, w_z = gauss_legendre_grid(5, 9)
    pts_y, w_y = gauss_legendre_grid(5, 9, polar="y")
    np.testing.assert_array_equal(pts_y, pts_z[:, [1, 2, 0]])
    np.testing.assert_array_equal(w_y, w_z)
    y = sh_values(range(5), pts_y)
    gram = (y * w_y[:, None]).T @ y  # degree <= 8 integrands: orthonormal on the rotated grid
    np.testing.assert_allclose(gram, np.eye(25), atol=1e-12)
    tp = TensorProduct(*case("channelwise", 3, C=2), backend="grid")
    for side in tp.impl._half.values():
        for i, _, s, k, _ in side.blocks:
            assert s in (0, 1) and k == (2 * i + 1 + 1 - s) // 2
    with pytest.raises(ValueError, match="polar"):
        gauss_legendre_grid(3, 5, polar="x")


@pytest.mark.parametrize("mode", ["channelwise", "elementwise"])
@pytest.mark.parametrize("res", [None, (4, 9), (5, 7), (3, 5)])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("needs", [(True, True, True), (True, False, False), (False, True, True), (False, False, True)])
def test_half_grid_route_equals_full_grid(mode, res, shared, needs):
    """The reflection-symmetric route (half the grid, even/odd components) gives the numbers and
    gradients of the full-grid product, at exact and coarse resolutions, with an equator ring
    (odd n_lat) and without, per-sample and shared weights."""
    from mlip.kernels.tp.product import SphericalProductBackend

    in1, in2, out = case(mode, 3, C=3)
    opts = {} if res is None else {"resolution": res}
    tp = TensorProduct(in1, in2, out, mode=mode, backend="grid", **opts)
    impl = tp.impl
    assert impl._half is not None
    g = torch.Generator().manual_seed(7)
    x1 = torch.randn(6, tp.irreps_in1.dim, dtype=F64, generator=g, requires_grad=needs[0])
    x2 = torch.randn(6, tp.irreps_in2.dim, dtype=F64, generator=g, requires_grad=needs[1])
    w = torch.randn(1 if shared else 6, tp.weight_numel, dtype=F64, generator=g, requires_grad=needs[2])
    y = impl(x1, x2, w)
    y0 = SphericalProductBackend.forward(impl, x1, x2, w)  # the full grid, channel layout
    torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
    gy = torch.randn(y.shape, dtype=F64, generator=g)
    wrt = [t for t in (x1, x2, w) if t.requires_grad]
    for a, b in zip(torch.autograd.grad(y, wrt, gy), torch.autograd.grad(y0, wrt, gy)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_grid_rows_route_equals_forward_with_derivatives():
    """forward_rows (stacked rows) and forward (multiplicity-major) are the same product,
    first and second derivatives included."""
    in1, in2, out = case("channelwise", 2, C=2)
    tp = TensorProduct(in1, in2, out, backend="grid")
    p1, p2, p3 = tp.rows_plans
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(3, tp.irreps_in1.dim, dtype=F64, generator=g, requires_grad=True)
    x2 = torch.randn(3, tp.irreps_in2.dim, dtype=F64, generator=g, requires_grad=True)
    w = torch.randn(3, tp.weight_numel, dtype=F64, generator=g, requires_grad=True)
    torch.testing.assert_close(p3.unstack(tp.forward_rows(p1.stack(x1), p2.stack(x2), w)), tp(x1, x2, w),
                               rtol=1e-12, atol=1e-12)
    rows = lambda a, b, c: tp.forward_rows(p1.stack(a), p2.stack(b), c)  # noqa: E731
    assert torch.autograd.gradcheck(rows, (x1, x2, w))
    assert torch.autograd.gradgradcheck(rows, (x1, x2, w))


def test_grid_outputs_do_not_share_scratch_memory():
    """The half-grid route reuses scratch buffers between calls: what it returns (outputs and
    gradients) must not be one of them."""
    in1, in2, out = case("channelwise", 3, C=4)
    tp = TensorProduct(in1, in2, out, backend="grid")
    g = torch.Generator().manual_seed(5)
    args = [torch.randn(4, d, generator=g, requires_grad=True) for d in (tp.irreps_in1.dim, tp.irreps_in2.dim)]
    w = torch.randn(4, tp.weight_numel, generator=g, requires_grad=True)
    y1 = tp(*args, w)
    g1 = torch.autograd.grad(y1.square().sum(), (*args, w))
    keep = [t.detach().clone() for t in (y1, *g1)]
    y2 = tp(*(2 * a.detach() for a in args), 3 * w.detach())
    torch.autograd.grad(tp(*args, 2 * w).sum(), args)
    assert not torch.equal(y1, y2)
    for a, b in zip((y1, *g1), keep):
        assert torch.equal(a, b)


@pytest.mark.parametrize("res", [None, (4, 9), (3, 5)])
def test_symmetric_power_equals_powers_on_the_full_grid(res):
    """SymmetricPower's numbers are those of the powers on the full grid, sum_k w_out[k] P_l3[f^k]
    (odd and even n_lat, exact and coarse resolutions)."""
    from mlip.kernels.tp.power import SymmetricPower

    C, irr_in, irr_out = 2, "2x0e+2x1o+2x2e", "2x0e+2x1o+2x2e+2x3o"
    sp = SymmetricPower(irr_in, irr_out, 3, resolution=res)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, sp.irreps_in.dim, dtype=F64, generator=g)
    w = torch.randn(5, sp.weight_numel, dtype=F64, generator=g)
    pts, qw = gauss_legendre_grid(*sp.resolution)
    y_in = torch.from_numpy(sh_values([0, 1, 2], pts))  # [P, 9]
    y_out = torch.from_numpy(sh_values([0, 1, 2, 3], pts))  # [P, 16]
    dims_in, dims_out = [1, 3, 5], [1, 3, 5, 7]
    wv = w.view(5, -1, C)  # [N, 3 + 3 * 4, C]
    xs = torch.split(x, [C * d for d in dims_in], dim=1)
    # per channel coefficients with the input weights, then values on the full grid
    coef = torch.cat([b.view(5, C, d) * wv[:, i, :, None] for i, (b, d) in enumerate(zip(xs, dims_in))], dim=2)
    f = coef @ y_in.T  # [N, C, P]
    out = 0
    for k in range(3):
        proj = (f ** (k + 1) * torch.from_numpy(qw)) @ y_out  # [N, C, 16]
        wk = torch.cat([wv[:, 3 + 4 * k + i, :, None].expand(5, C, d) for i, d in enumerate(dims_out)], dim=2)
        out = out + proj * wk
    ref = torch.cat([out[:, :, o : o + d].reshape(5, -1) for o, d in zip([0, 1, 4, 9], dims_out)], dim=1)
    torch.testing.assert_close(sp(x, w), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", GAUNT_BACKENDS)
def test_force_like_gradient_when_x1_depends_on_x2(backend):
    """A potential's second layer: x1 is itself a function of x2 (both of the positions). The
    gradient with create_graph (training on forces) equals the plain one and that of the full
    grid's autograd ops; each input's gradient is the partial along this product only."""
    from mlip.kernels.tp.product import SphericalProductBackend

    in1, in2, out = case("channelwise", 2, C=3)
    tp = TensorProduct(in1, in2, out, backend=backend)
    g = torch.Generator().manual_seed(6)
    x2 = torch.randn(5, tp.irreps_in2.dim, dtype=F64, generator=g, requires_grad=True)
    mix = torch.randn(tp.irreps_in2.dim, tp.irreps_in1.dim, dtype=F64, generator=g)
    w = torch.randn(5, tp.weight_numel, dtype=F64, generator=g, requires_grad=True)

    def energy(f):
        x1 = torch.tanh(x2 @ mix)  # depends on x2
        return f(x1, x2, w).square().sum()

    plain = torch.autograd.grad(energy(tp), (x2, w))
    graph = torch.autograd.grad(energy(tp), (x2, w), create_graph=True)
    full = torch.autograd.grad(energy(lambda a, b, c: SphericalProductBackend.forward(tp.impl, a, b, c)), (x2, w))
    for a, b, c in zip(plain, graph, full):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
