"""The TensorProduct interface: construction, validation, packaging."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from tp_cases import BACKENDS, options

from mlip.errors import ConfigError, KernelInputError
from mlip.kernels import TensorProduct, second_order
from mlip.kernels.tp import BACKENDS as REGISTRY
from mlip.kernels.tp import CGBackend, backend_options, register_backend

ROOT = Path(__file__).resolve().parents[2]


def test_backends_registered():
    assert set(REGISTRY) == {"cg", "gaunt", "grid", "cp"}
    assert BACKENDS == list(REGISTRY)  # the tests' list is the registry


def test_unknown_backend_lists_known():
    with pytest.raises(ConfigError, match=r"known backends: \['cg', 'cp', 'gaunt', 'grid'\]"):
        TensorProduct("2x0e", "0e", "2x0e", backend="fourier")


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_option_names_option_and_backend(backend):
    """A misspelt option is a ConfigError naming it and the backend, not a TypeError."""
    known = backend_options(backend)
    with pytest.raises(ConfigError, match=rf"backend '{backend}' has no option 'resolutoin'") as info:
        TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend=backend, resolutoin=3)
    assert str(known or "no options") in str(info.value)
    # the options it does list are accepted
    TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend=backend, **options(backend))


def test_backend_options():
    assert backend_options("cg") == ["route"]
    assert backend_options("gaunt") == []
    assert backend_options("grid") == ["resolution"]
    assert backend_options("cp") == ["rank", "iters"]


def test_registered_backend_is_usable_everywhere():
    """A backend added with register_backend is in the registry every list is read from, is built
    by TensorProduct with its options checked, and leaves the registry when removed."""

    class RenamedCG(CGBackend):
        name = "renamed_cg"

    register_backend(RenamedCG)
    try:
        assert "renamed_cg" in REGISTRY and backend_options("renamed_cg") == ["route"]
        a = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend="renamed_cg", route="per_sample")
        b = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend="cg")
        x1, x2, w = torch.randn(3, 8), torch.randn(3, 4), torch.randn(b.weight_numel)
        torch.testing.assert_close(a(x1, x2, w), b(x1, x2, w))
        with pytest.raises(ConfigError, match="backend 'renamed_cg' has no option 'rank'"):
            TensorProduct("2x0e", "0e", "2x0e", backend="renamed_cg", rank=3)
    finally:
        del REGISTRY["renamed_cg"]
    with pytest.raises(ConfigError, match="unknown tensor-product backend 'renamed_cg'"):
        TensorProduct("2x0e", "0e", "2x0e", backend="renamed_cg")


BAD_INPUTS = [  # (irreps_in1, irreps_in2, irreps_out, keywords, message)
    ("2x0e", "0e", "2x0e", {"mode": "uvw"}, "mode must be one of"),
    ("2x0q", "0e", "2x0e", {}, "irreps_in1: cannot parse"),
    ("2x0e+3x1o", "0e", "2x0e", {}, "same multiplicity"),
    ("2x0e", "2x0e", "2x0e", {"mode": "channelwise"}, "irreps_in2: expected multiplicity 1"),
    ("2x0e", "0e", "3x0e", {}, "irreps_out: expected multiplicity 2"),
    ("2x0e", "0e", "2x1o", {}, "no path .* produces"),
]


@pytest.mark.parametrize("in1,in2,out,kw,message", BAD_INPUTS)
def test_bad_mode_and_irreps(in1, in2, out, kw, message):
    with pytest.raises(KernelInputError, match=message):
        TensorProduct(in1, in2, out, **kw)
    assert issubclass(KernelInputError, ValueError) and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shape_dtype_errors_name_expected_shape(backend):
    tp = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend=backend)
    n = 4
    x1, x2 = torch.randn(n, 8), torch.randn(n, 4)
    w = torch.randn(n, tp.weight_numel)
    assert tp(x1, x2, w).shape == (n, 8)
    assert tp(x1, x2, w[0]).shape == (n, 8)  # shared weights
    with pytest.raises(KernelInputError, match=r"x1: expected shape \[N, 8\], got \(4, 7\)"):
        tp(x1[:, :7], x2, w)
    with pytest.raises(KernelInputError, match=r"x2: expected shape \[N, 4\]"):
        tp(x1, x2[:, :3], w)
    k = tp.weight_numel
    with pytest.raises(KernelInputError, match=rf"weight: expected shape \[4, {k}\] or \[{k}\]"):
        tp(x1, x2, w[:, :-1])
    with pytest.raises(KernelInputError, match="same N"):
        tp(x1, x2[:3], w)
    with pytest.raises(KernelInputError, match="x2: dtype torch.float64 differs"):
        tp(x1, x2.double(), w)
    with pytest.raises(KernelInputError, match="float32 or float64"):
        tp(x1.half(), x2.half(), w.half())


def test_import_names_only_mlip():
    """Only ``mlip`` is a top-level name; the sibling folders are its subpackages."""
    code = (
        "import importlib.util, mlip, mlip.kernels, mlip.datasets, mlip.calculators\n"
        "for name in ('kernels', 'datasets', 'calculators'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        "print(mlip.kernels.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).parent.name == "kernels"


def test_wheel_has_one_top_level_package(tmp_path):
    """``pip install .`` packaging: the wheel holds mlip/kernels etc. and no other top level."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        check=True,
        capture_output=True,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    (wheel,) = tmp_path.glob("mlip-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"mlip"}
    for sub in ("kernels", "kernels/tp", "datasets", "calculators"):
        assert f"mlip/{sub}/__init__.py" in names


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    """N = 0 (a structure without edges) gives an empty output and zero gradients."""
    tp = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend=backend)
    x1 = torch.zeros(0, 8, requires_grad=True)
    x2 = torch.zeros(0, 4, requires_grad=True)
    w = torch.randn(tp.weight_numel, requires_grad=True)
    y = tp(x1, x2, w)
    assert y.shape == (0, 8)
    g = torch.autograd.grad(y.sum(), (x1, x2, w))
    assert g[0].shape == (0, 8) and torch.equal(g[2], torch.zeros_like(w))


@pytest.mark.parametrize("mode", ["channelwise", "elementwise"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_chunked_equals_unchunked(backend, mode):
    """CPU chunking over samples changes nothing: outputs, first and second derivatives,
    per-sample and shared weights, N not a multiple of the chunk."""
    in2 = "0e+1o+2e" if mode == "channelwise" else "3x0e+3x1o+3x2e"
    kw = options(backend)
    whole = TensorProduct("3x0e+3x1o+3x2e", in2, "3x0e+3x1o+3x2e", mode=mode, backend=backend, chunk_size=0, **kw)
    parts = TensorProduct("3x0e+3x1o+3x2e", in2, "3x0e+3x1o+3x2e", mode=mode, backend=backend, chunk_size=4, **kw)
    g = torch.Generator().manual_seed(1)
    n = 11
    x1 = torch.randn(n, whole.irreps_in1.dim, dtype=torch.float64, generator=g, requires_grad=True)
    x2 = torch.randn(n, whole.irreps_in2.dim, dtype=torch.float64, generator=g, requires_grad=True)
    for w in (torch.randn(n, whole.weight_numel, dtype=torch.float64, generator=g),
              torch.randn(whole.weight_numel, dtype=torch.float64, generator=g)):
        w.requires_grad_()
        ys = [m(x1, x2, w) for m in (whole, parts)]
        torch.testing.assert_close(ys[1], ys[0], rtol=1e-12, atol=1e-12)
        # first derivatives alone (the written-out backward where a backend has one), all
        # inputs and x1 alone
        for wrt in ((x1, x2, w), (x1,)):
            plain = [torch.autograd.grad(y.sin().sum(), wrt, retain_graph=True) for y in ys]
            for a, b in zip(*plain):
                torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        grads = [torch.autograd.grad(y.sin().sum(), (x1, x2, w), create_graph=True) for y in ys]
        for a, b in zip(*grads):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        gg = [torch.autograd.grad(gr[0].square().sum() + gr[1].square().sum(), (x1, w)) for gr in grads]
        for a, b in zip(*gg):
            torch.testing.assert_close(b, a, rtol=1e-11, atol=1e-11)
    assert parts.chunk_size == 4 and TensorProduct("3x0e", "0e", "3x0e").chunk_size >= 16
    with pytest.raises(KernelInputError, match="chunk_size"):
        TensorProduct("3x0e", "0e", "3x0e", chunk_size=-1)


def _graph_nodes(y):
    """Names of the autograd nodes below ``y``."""
    seen, todo, names = set(), [y.grad_fn], []
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        names.append(type(f).__name__)
        todo += [g for g, _ in f.next_functions]
    return names


@pytest.mark.parametrize("backend", ["grid", "cp", "cg"])
def test_chunks_inside_one_autograd_node(backend):
    """grid (half-grid route) and cp run the chunks of a call inside one autograd node: no
    split of the inputs, no concatenation of outputs or gradients; cg keeps the default
    chunk loop (split + cat), which is what the check tells apart."""
    tp = TensorProduct("3x0e+3x1o+3x2e", "0e+1o+2e", "3x0e+3x1o+3x2e", backend=backend, chunk_size=4)
    x1 = torch.randn(11, tp.irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(11, tp.irreps_in2.dim, requires_grad=True)
    w = torch.randn(11, tp.weight_numel, requires_grad=True)
    names = _graph_nodes(tp(x1, x2, w))
    chunk_ops = [n for n in names if n.startswith(("Cat", "Split"))]
    assert bool(chunk_ops) == (backend == "cg"), names


@pytest.mark.parametrize("chunk", [0, 4])
@pytest.mark.parametrize("backend", ["grid", "cp"])
def test_second_order_hint_changes_the_route_not_the_numbers(backend, chunk):
    """Where second derivatives are announced (``second_order``), grid and cp take autograd
    ops instead of their written-out backward (whose graph would need a recomputation):
    same values, first and second derivatives, whole or in chunks; grid on stacked rows too."""
    tp = TensorProduct("3x0e+3x1o+3x2e", "0e+1o+2e", "3x0e+3x1o+3x2e", backend=backend, chunk_size=chunk).double()
    g = torch.Generator().manual_seed(3)
    n = 11
    cases = [(tp, (n, tp.irreps_in1.dim), (n, tp.irreps_in2.dim))]
    if backend == "grid":
        p1, p2, _ = tp.rows_plans
        cases.append((tp.forward_rows, (p1.rows, n, p1.channels), (p2.rows, n, 1)))
    for call, s1, s2 in cases:
        x1, x2 = (torch.randn(s, dtype=torch.float64, generator=g, requires_grad=True) for s in (s1, s2))
        w = torch.randn(n, tp.weight_numel, dtype=torch.float64, generator=g, requires_grad=True)
        y = call(x1, x2, w)
        with second_order():
            y2 = call(x1, x2, w)
        # a different route where there is a written-out one (cp: its chunked call only)
        assert (_graph_nodes(y2) != _graph_nodes(y)) == (backend == "grid" or chunk > 0)
        torch.testing.assert_close(y2, y, rtol=1e-12, atol=1e-12)
        gy = torch.randn(y.shape, dtype=torch.float64, generator=g)
        g1 = torch.autograd.grad(y, (x1, x2, w), gy, create_graph=True)
        g2 = torch.autograd.grad(y2, (x1, x2, w), gy, create_graph=True)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        h1, h2 = (torch.autograd.grad(sum(t.sin().sum() for t in gr), (x1, x2, w)) for gr in (g1, g2))
        for a, b in zip(h1, h2):
            torch.testing.assert_close(b, a, rtol=1e-11, atol=1e-11)


ROWS_LAYOUTS = [
    ("channelwise", "3x0e+3x1o+3x2e"),
    ("elementwise", "3x0e+3x1o+3x2e"),
    ("channelwise", "3x0e"),  # scalar input: grid's product without transforms
]
#: the documented rows routes (TensorProduct.supports_rows), which must not get lost; for the
#: other cases of every registered backend, a route that claims support must be correct
ROWS_CASES = [
    ("cg", "channelwise", "3x0e+3x1o+3x2e"),
    ("cg", "elementwise", "3x0e+3x1o+3x2e"),
    ("cg", "channelwise", "3x0e"),
    ("grid", "channelwise", "3x0e+3x1o+3x2e"),
    ("grid", "channelwise", "3x0e"),
    ("cp", "channelwise", "3x0e+3x1o+3x2e"),
    ("cp", "elementwise", "3x0e+3x1o+3x2e"),
]


@pytest.mark.parametrize("mode,in1", ROWS_LAYOUTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_rows_equals_forward(backend, mode, in1, device):
    """``forward_rows`` on stacked component-major rows is ``forward`` in another layout,
    values and gradients, with per-sample and shared weights; bad shapes are named. Without
    a rows route it is a RuntimeError."""
    in2 = "0e+1o+2e" if mode == "channelwise" else "3x0e+3x1o+3x2e"
    tp = TensorProduct(in1, in2, "3x0e+3x1o+3x2e", mode=mode, backend=backend, chunk_size=0).to(device)
    assert tp.supports_rows or (backend, mode, in1) not in ROWS_CASES
    p1, p2, p3 = tp.rows_plans
    if not tp.supports_rows:
        with pytest.raises(RuntimeError, match="no component-major route"):
            tp.forward_rows(p1.stack(torch.zeros(2, tp.irreps_in1.dim, device=device)),
                            p2.stack(torch.zeros(2, tp.irreps_in2.dim, device=device)),
                            torch.zeros(tp.weight_numel, device=device))
        return
    g = torch.Generator().manual_seed(0)
    x1, x2, w = (torch.randn(7, d, generator=g, dtype=torch.float64).to(device).requires_grad_()
                 for d in (tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel))
    for weight in (w, w[0]):
        y = p3.unstack(tp.forward_rows(p1.stack(x1), p2.stack(x2), weight))
        y_ref = tp(x1, x2, weight)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        grads = torch.autograd.grad(y.sin().sum(), [x1, x2, w])
        grads_ref = torch.autograd.grad(y_ref.sin().sum(), [x1, x2, w])
        for a, b in zip(grads, grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(KernelInputError, match=r"x2: expected shape \[9, N"):
        tp.forward_rows(p1.stack(x1), p2.stack(x2)[:5], w)
    with pytest.raises(KernelInputError, match="weight: expected shape"):
        tp.forward_rows(p1.stack(x1), p2.stack(x2), w[:3])
    with pytest.raises(KernelInputError, match="x2: dtype torch.float32 differs"):
        tp.forward_rows(p1.stack(x1), p2.stack(x2).float(), w)


def test_forward_rows_only_where_supported():
    tp = TensorProduct("3x0e+3x1o", "0e+1o", "3x0e+3x1o", backend="gaunt")
    assert not tp.supports_rows
    with pytest.raises(RuntimeError, match="no component-major route"):
        tp.forward_rows(torch.zeros(4, 2, 3), torch.zeros(4, 2, 1), torch.zeros(tp.weight_numel))
