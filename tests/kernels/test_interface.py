"""The TensorProduct interface: construction, validation, packaging."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from mlip.kernels import BACKENDS, TensorProduct

ROOT = Path(__file__).resolve().parents[2]


def test_backends_registered():
    assert set(BACKENDS) == {"cg", "gaunt", "grid", "cp"}


def test_unknown_backend_lists_known():
    with pytest.raises(ValueError, match=r"known backends: \['cg', 'cp', 'gaunt', 'grid'\]"):
        TensorProduct("2x0e", "0e", "2x0e", backend="fourier")


def test_bad_mode_and_irreps():
    with pytest.raises(ValueError, match="mode must be one of"):
        TensorProduct("2x0e", "0e", "2x0e", mode="uvw")
    with pytest.raises(ValueError, match="irreps_in1: cannot parse"):
        TensorProduct("2x0q", "0e", "2x0e")
    with pytest.raises(ValueError, match="same multiplicity"):
        TensorProduct("2x0e+3x1o", "0e", "2x0e")
    with pytest.raises(ValueError, match="irreps_in2: expected multiplicity 1"):
        TensorProduct("2x0e", "2x0e", "2x0e", mode="channelwise")
    with pytest.raises(ValueError, match="irreps_out: expected multiplicity 2"):
        TensorProduct("2x0e", "0e", "3x0e")
    with pytest.raises(ValueError, match="no path .* produces"):
        TensorProduct("2x0e", "0e", "2x1o")


@pytest.mark.parametrize("backend", ["cg", "gaunt", "grid", "cp"])
def test_shape_dtype_errors_name_expected_shape(backend):
    tp = TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend=backend)
    n = 4
    x1, x2 = torch.randn(n, 8), torch.randn(n, 4)
    w = torch.randn(n, tp.weight_numel)
    assert tp(x1, x2, w).shape == (n, 8)
    assert tp(x1, x2, w[0]).shape == (n, 8)  # shared weights
    with pytest.raises(ValueError, match=r"x1: expected shape \[N, 8\], got \(4, 7\)"):
        tp(x1[:, :7], x2, w)
    with pytest.raises(ValueError, match=r"x2: expected shape \[N, 4\]"):
        tp(x1, x2[:, :3], w)
    with pytest.raises(ValueError, match=rf"weight: expected shape \[4, {tp.weight_numel}\] or \[{tp.weight_numel}\]"):
        tp(x1, x2, w[:, :-1])
    with pytest.raises(ValueError, match="same N"):
        tp(x1, x2[:3], w)
    with pytest.raises(ValueError, match="x2: dtype torch.float64 differs"):
        tp(x1, x2.double(), w)
    with pytest.raises(ValueError, match="float32 or float64"):
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
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
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


@pytest.mark.parametrize("backend", ["cg", "gaunt", "grid", "cp"])
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
@pytest.mark.parametrize("backend", ["cg", "gaunt", "grid", "cp"])
def test_chunked_equals_unchunked(backend, mode):
    """CPU chunking over samples changes nothing: outputs, first and second derivatives,
    per-sample and shared weights, N not a multiple of the chunk."""
    in2 = "0e+1o+2e" if mode == "channelwise" else "3x0e+3x1o+3x2e"
    kw = {"rank": "full"} if backend == "cp" else {}
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
        grads = [torch.autograd.grad(y.sin().sum(), (x1, x2, w), create_graph=True) for y in ys]
        for a, b in zip(*grads):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        gg = [torch.autograd.grad(gr[0].square().sum() + gr[1].square().sum(), (x1, w)) for gr in grads]
        for a, b in zip(*gg):
            torch.testing.assert_close(b, a, rtol=1e-11, atol=1e-11)
    assert parts.chunk_size == 4 and TensorProduct("3x0e", "0e", "3x0e").chunk_size >= 16
    with pytest.raises(ValueError, match="chunk_size"):
        TensorProduct("3x0e", "0e", "3x0e", chunk_size=-1)


ROWS_CASES = [
    ("cg", "channelwise", "3x0e+3x1o+3x2e"),
    ("cg", "elementwise", "3x0e+3x1o+3x2e"),
    ("cg", "channelwise", "3x0e"),
    ("grid", "channelwise", "3x0e+3x1o+3x2e"),
    ("grid", "channelwise", "3x0e"),  # scalar input: the product without transforms
    ("cp", "channelwise", "3x0e+3x1o+3x2e"),
    ("cp", "elementwise", "3x0e+3x1o+3x2e"),
]


@pytest.mark.parametrize("backend,mode,in1", ROWS_CASES)
def test_forward_rows_equals_forward(backend, mode, in1):
    """``forward_rows`` on stacked component-major rows is ``forward`` in another layout,
    values and gradients, with per-sample and shared weights; bad shapes are named."""
    in2 = "0e+1o+2e" if mode == "channelwise" else "3x0e+3x1o+3x2e"
    tp = TensorProduct(in1, in2, "3x0e+3x1o+3x2e", mode=mode, backend=backend, chunk_size=0)
    assert tp.supports_rows
    p1, p2, p3 = tp.rows_plans
    g = torch.Generator().manual_seed(0)
    x1, x2, w = (torch.randn(7, d, generator=g, dtype=torch.float64, requires_grad=True)
                 for d in (tp.irreps_in1.dim, tp.irreps_in2.dim, tp.weight_numel))
    for weight in (w, w[0]):
        y = p3.unstack(tp.forward_rows(p1.stack(x1), p2.stack(x2), weight))
        y_ref = tp(x1, x2, weight)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        grads = torch.autograd.grad(y.sin().sum(), [x1, x2, w])
        grads_ref = torch.autograd.grad(y_ref.sin().sum(), [x1, x2, w])
        for a, b in zip(grads, grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"x2: expected shape \[9, N"):
        tp.forward_rows(p1.stack(x1), p2.stack(x2)[:5], w)
    with pytest.raises(ValueError, match="weight: expected shape"):
        tp.forward_rows(p1.stack(x1), p2.stack(x2), w[:3])
    with pytest.raises(ValueError, match="x2: dtype torch.float32 differs"):
        tp.forward_rows(p1.stack(x1), p2.stack(x2).float(), w)


def test_forward_rows_only_where_supported():
    tp = TensorProduct("3x0e+3x1o", "0e+1o", "3x0e+3x1o", backend="gaunt")
    assert not tp.supports_rows
    with pytest.raises(RuntimeError, match="no component-major route"):
        tp.forward_rows(torch.zeros(4, 2, 3), torch.zeros(4, 2, 1), torch.zeros(tp.weight_numel))
