"""Engines: the ``cuequivariance`` engine gives the numbers of the ``torch`` route (values, first
and second derivatives), proven on CPU through cuEquivariance's own pure-torch fallback;
backends without it refuse it; ``auto`` is ``torch`` on CPU."""

import copy
import sys

import pytest
import torch
from tp_cases import BACKENDS

from mlip.errors import ConfigError
from mlip.kernels import ENGINES, TensorProduct, many_body_product, set_engine
from mlip.kernels.tp import cueq

needs_cueq = pytest.mark.skipif(not cueq.available(),
                                reason="cuequivariance / cuequivariance-torch not installed (test extra)")

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}

#: (in1, in2, out) per mode: natural parity up to l=2, and a case with odd-parity irreps
CASES = {
    "channelwise": [("2x0e+2x1o+2x2e", "0e+1o+2e", "2x0e+2x1o+2x2e"),
                    ("3x0e+3x1o+3x1e", "0e+1o", "3x0e+3x1e+3x1o+3x0o")],
    "elementwise": [("2x0e+2x1o+2x2e", "2x0e+2x1o+2x2e", "2x0e+2x1o+2x2e"),
                    ("3x0e+3x1e", "3x1o+3x0e", "3x1o+3x1e+3x0e")],
}


def _close(a: torch.Tensor, b: torch.Tensor, dtype) -> None:
    err = float((a - b).detach().abs().max()) if a.numel() else 0.0
    scale = max(1.0, float(b.detach().abs().max()) if b.numel() else 0.0)
    assert err <= TOL[dtype] * scale, f"max error {err:.3g} (scale {scale:.3g})"


def _inputs(tp, n, dtype, shared, seed=0):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, tp.irreps_in1.dim, generator=g, dtype=torch.float64).to(dtype)
    x2 = torch.randn(n, tp.irreps_in2.dim, generator=g, dtype=torch.float64).to(dtype)
    w = torch.randn(*([] if shared else [n]), tp.weight_numel, generator=g, dtype=torch.float64).to(dtype)
    return [t.requires_grad_() for t in (x1, x2, w)]


def _value_and_derivatives(tp, x1, x2, w):
    """Output, first derivatives of a fixed functional of it, and a second derivative (the
    gradient of the squared first derivatives, as a force loss needs)."""
    y = tp(x1, x2, w)
    g = torch.Generator().manual_seed(1)
    probe = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)
    grads = torch.autograd.grad((y * probe).sum(), (x1, x2, w), create_graph=True)
    second = torch.autograd.grad(sum((gr**2).sum() for gr in grads[:2]), (x1, x2, w))
    return [y, *grads, *second]


@needs_cueq
@pytest.mark.parametrize("mode", ["channelwise", "elementwise"])
@pytest.mark.parametrize("case", [0, 1])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuequivariance_equals_torch(mode, case, shared, dtype):
    in1, in2, out = CASES[mode][case]
    tp = TensorProduct(in1, in2, out, mode=mode, engine="torch")
    inputs = _inputs(tp, 5, dtype, shared)
    ref = _value_and_derivatives(tp, *inputs)
    tp.engine = "cuequivariance"
    assert tp.resolved_engine("cpu") == "cuequivariance"
    got = _value_and_derivatives(tp, *inputs)
    for a, b in zip(got, ref):
        assert a.dtype == dtype and a.shape == b.shape
        _close(a, b, dtype)


@needs_cueq
@pytest.mark.parametrize("mode", ["channelwise", "elementwise"])
def test_cuequivariance_rows_and_chunks(mode):
    """The component-major route and the CPU chunks give the same numbers on both engines."""
    in1, in2, out = CASES[mode][0]
    tp = TensorProduct(in1, in2, out, mode=mode, chunk_size=2)
    x1, x2, w = (t.detach() for t in _inputs(tp, 5, torch.float64, False))
    p1, p2, p3 = tp.rows_plans
    ref, ref_rows = tp(x1, x2, w), tp.forward_rows(p1.stack(x1), p2.stack(x2), w)
    tp.engine = "cuequivariance"
    _close(tp(x1, x2, w), ref, torch.float64)
    rows = tp.forward_rows(p1.stack(x1), p2.stack(x2), w)
    assert rows.shape == ref_rows.shape
    _close(rows, ref_rows, torch.float64)
    _close(p3.unstack(rows), ref, torch.float64)


@needs_cueq
def test_engine_is_not_state():
    """Switching engines changes neither the state dict nor the numbers; copies keep working."""
    tp = TensorProduct(*CASES["channelwise"][0])
    before = dict(tp.state_dict())
    x1, x2, w = (t.detach() for t in _inputs(tp, 3, torch.float64, False))
    tp.engine = "cuequivariance"
    y = tp(x1, x2, w)
    assert dict(tp.state_dict()).keys() == before.keys()
    twin = copy.deepcopy(tp)
    _close(twin(x1, x2, w), y, torch.float64)
    twin.engine = "torch"
    _close(twin(x1, x2, w), y, torch.float64)
    assert tp.engine == "cuequivariance"


@pytest.mark.parametrize("backend", [b for b in BACKENDS if "cuequivariance" not in TensorProduct(
    "2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend=b).engines])
def test_backend_without_engine_refuses_it(backend):
    with pytest.raises(ConfigError, match=rf"backend '{backend}' has no engine 'cuequivariance'.*'torch'"):
        TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend=backend, engine="cuequivariance")
    tp = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend=backend)
    with pytest.raises(ConfigError, match=f"'{backend}'"):
        tp.engine = "cuequivariance"
    assert tp.engine == "auto" and tp.resolved_engine("cpu") == "torch"
    tp.engine = "torch"
    assert tp.engine == "torch"


def test_cg_has_both_engines_and_auto_is_torch_on_cpu():
    tp = TensorProduct(*CASES["elementwise"][0], mode="elementwise")
    assert tp.engine == "auto" and set(tp.engines) == {"torch", "cuequivariance"}
    assert tp.resolved_engine("cpu") == "torch" and tp.executor(torch.device("cpu")) is tp.impl
    assert set(ENGINES) == {"auto", "torch", "cuequivariance"}


@pytest.mark.parametrize("bad", ["cuda", "cueq", None])
def test_unknown_engine_name(bad):
    with pytest.raises(ConfigError, match="unknown engine"):
        TensorProduct("2x0e", "0e", "2x0e", engine=bad)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuequivariance_torch", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=r"mlip\[cuda\]"):
        TensorProduct("2x0e", "0e", "2x0e", engine="cuequivariance")
    assert TensorProduct("2x0e", "0e", "2x0e").resolved_engine("cpu") == "torch"  # auto does not need it


def test_set_engine_checks_everything_first():
    """A module holding a backend without the engine refuses it and nothing is switched."""
    mods = torch.nn.ModuleList([TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend="cg"),
                                TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend="grid")])
    with pytest.raises(ConfigError, match="'grid'"):
        set_engine(mods, "cuequivariance")
    assert [m.engine for m in mods] == ["auto", "auto"]
    assert set_engine(mods, "torch") is mods and [m.engine for m in mods] == ["torch", "torch"]


# -- many-body product -------------------------------------------------------------------------

def _product(backend, engine="auto", correlation=3):
    return many_body_product(backend, "2x0e+2x1o+2x2e", "2x0e+2x1o", correlation, 3,
                             generator=torch.Generator().manual_seed(0), engine=engine).double()


@needs_cueq
@pytest.mark.parametrize("correlation", [1, 3])
def test_many_body_product_engines_agree(correlation):
    prod = _product("cg", correlation=correlation)
    g = torch.Generator().manual_seed(2)
    a = torch.randn(6, prod.irreps_in.dim, generator=g, dtype=torch.float64, requires_grad=True)
    element = torch.tensor([0, 2, 1, 1, 0, 2])
    out = []
    for engine in ("torch", "cuequivariance"):
        set_engine(prod, engine)
        assert all(tp.engine == engine for tp in prod.tps)
        y = prod(a, element)
        (ga,) = torch.autograd.grad((y**2).sum(), a, create_graph=True)
        (gga,) = torch.autograd.grad((ga**2).sum(), a)
        out.append((y, ga, gga))
    for got, ref in zip(*out):
        _close(got, ref, torch.float64)
    assert out[0][0].shape == (6, prod.irreps_out.dim)


def test_many_body_product_per_backend():
    """``grid`` builds pointwise powers (torch only, refusing cuequivariance); the others a chain
    of their elementwise products, with the weight table the model has always had."""
    from mlip.kernels.tp.power import SymmetricPower

    grid = _product("grid")
    assert isinstance(grid.power, SymmetricPower) and len(grid.weights) == 1
    assert grid.weights[0].shape == (3, grid.power.weight_numel)
    with pytest.raises(ConfigError, match="'grid'.*engines: \\['auto', 'torch'\\]"):
        set_engine(grid, "cuequivariance")
    with pytest.raises(ConfigError, match="'grid'"):
        _product("grid", engine="cuequivariance")
    chain = _product("cg")
    assert [tuple(w.shape) for w in chain.weights] == [(3, 4), (3, chain.tps[0].weight_numel),
                                                      (3, chain.tps[1].weight_numel)]
    assert all(tp.mode == "elementwise" and tp.backend == "cg" for tp in chain.tps)
    with pytest.raises(ConfigError, match="unknown tensor-product backend"):
        _product("nope")
    with pytest.raises(ValueError, match="prefix"):
        many_body_product("cg", "2x0e+2x1o", "2x1o", 2, 1, generator=torch.Generator())


# -- element-dependent linear ------------------------------------------------------------------

def _element_linear_reference(lin, x, element):
    """``y_l = x_l @ W_l[element] / sqrt(mul_in)``, one atom at a time."""
    rows = []
    for n in range(x.shape[0]):
        e, parts = int(element[n]), []
        for (a, b, mul_in, dim, mul_out, _), w in zip(lin.plan, lin.weights):
            W = w.view(mul_in, lin.num_elements, mul_out)[:, e]  # [mul_in, mul_out]
            parts.append((x[n, a:b].view(mul_in, dim).t() @ W / mul_in**0.5).t().reshape(-1))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


@pytest.mark.parametrize("engine", ["torch", pytest.param("cuequivariance", marks=needs_cueq)])
@pytest.mark.parametrize("irreps", [("3x0e+2x1o+2x2e", "2x0e+2x2e"), ("3x0e", "3x0e")])
def test_element_linear(engine, irreps):
    from mlip.kernels import ElementLinear

    lin = ElementLinear(*irreps, 3, generator=torch.Generator().manual_seed(0), engine=engine)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, lin.irreps_in.dim, generator=g, dtype=torch.float64, requires_grad=True)
    element = torch.tensor([2, 0, 1, 2, 1])
    y = lin(x, element)
    _close(y, _element_linear_reference(lin, x, element), torch.float64)
    assert [tuple(w.shape) for w in lin.weights] == [(mul_in, 3 * mul_out) for _, _, mul_in, _, mul_out, _ in lin.plan]
    if engine == "cuequivariance":
        (gx, gw) = torch.autograd.grad((y**2).sum(), (x, lin.weights[0]), create_graph=True)
        (ggx,) = torch.autograd.grad((gx**2).sum() + (gw**2).sum(), x)
        lin.engine = "torch"
        y2 = lin(x, element)
        ref = torch.autograd.grad((y2**2).sum(), (x, lin.weights[0]), create_graph=True)
        (ref_gg,) = torch.autograd.grad((ref[0] ** 2).sum() + (ref[1] ** 2).sum(), x)
        for a, b in ((gx, ref[0]), (gw, ref[1]), (ggx, ref_gg)):
            _close(a, b, torch.float64)
