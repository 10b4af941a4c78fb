"""``cp``: error falls with rank, full rank reproduces cg, factors are deterministic and cached."""

import os

import numpy as np
import pytest
import torch
from tp_cases import case

from mlip.errors import ConfigError
from mlip.kernels import TensorProduct
from mlip.kernels.tp.cp import cache_dir

F64 = torch.float64


@pytest.mark.parametrize("mode", ["channelwise", "elementwise"])
def test_full_rank_reproduces_cg(mode):
    in1, in2, out = case(mode, 3, C=3)
    cp = TensorProduct(in1, in2, out, mode=mode, backend="cp", rank="full")
    cg = TensorProduct(in1, in2, out, mode=mode, backend="cg")
    assert cp.weight_numel == 3
    report = cp.impl.report()
    assert report["rank"] == report["full_rank"] and report["relative_error"] < 1e-14
    x1 = torch.randn(6, cp.irreps_in1.dim, dtype=F64)
    x2 = torch.randn(6, cp.irreps_in2.dim, dtype=F64)
    w = torch.randn(6, 3, dtype=F64)  # one weight per channel ...
    w_cg = w.unsqueeze(1).expand(6, len(cg.impl.paths), 3).reshape(6, -1)  # ... shared by all paths
    torch.testing.assert_close(cp(x1, x2, w), cg(x1, x2, w_cg), rtol=1e-6, atol=1e-10)


def test_error_falls_with_rank():
    in1, in2, out = case("channelwise", 2, C=2)
    errs, eqs = [], []
    for rank in (6, 14, 28, 45, "full"):
        r = TensorProduct(in1, in2, out, backend="cp", rank=rank).impl.report()
        errs.append(r["relative_error"])
        eqs.append(r["equivariance_error"])
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[0] > 1e-2 and errs[-1] < 1e-14
    # equivariance error is bounded by (a small multiple of) the decomposition error
    for e, q in zip(errs, eqs):
        assert q <= 3 * e + 1e-12


def test_default_rank_grows_with_L():
    ranks = [TensorProduct(*case("channelwise", L, C=1), backend="cp").impl.rank for L in (1, 2, 3)]
    assert ranks == [7, 28, 63]


def test_factors_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MLIP_CACHE_DIR", str(tmp_path))
    in1, in2, out = case("channelwise", 2, C=2)
    a = TensorProduct(in1, in2, out, backend="cp", rank=20)
    files = list(cache_dir().glob("*.npz"))
    assert len(files) == 1 and str(tmp_path) in str(files[0])
    mtime = os.path.getmtime(files[0])
    b = TensorProduct(in1, in2, out, backend="cp", rank=20)  # loaded from the cache
    assert os.path.getmtime(files[0]) == mtime
    for name in ("A", "B", "Ct"):
        assert torch.equal(a.impl._const64[name], b.impl._const64[name])
    # recomputed from scratch elsewhere: identical numbers
    monkeypatch.setenv("MLIP_CACHE_DIR", str(tmp_path / "other"))
    c = TensorProduct(in1, in2, out, backend="cp", rank=20)
    assert np.array_equal(a.impl._const64["A"].numpy(), c.impl._const64["A"].numpy())
    # a corrupt cache entry is recomputed, not trusted
    files[0].write_bytes(b"garbage")
    monkeypatch.setenv("MLIP_CACHE_DIR", str(tmp_path))
    d = TensorProduct(in1, in2, out, backend="cp", rank=20)
    assert torch.equal(a.impl._const64["A"], d.impl._const64["A"])


def test_bad_rank():
    with pytest.raises(ConfigError, match="cp: option rank must be a positive integer"):
        TensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o", backend="cp", rank=0)


def test_unwritable_cache_is_not_an_error(tmp_path, monkeypatch):
    """A cache folder that cannot be created (here: under a regular file, which fails for root
    too) leaves the factors uncached, with the numbers of a cached run."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MLIP_CACHE_DIR", str(blocker / "cache"))
    in1, in2, out = case("channelwise", 2, C=2)
    a = TensorProduct(in1, in2, out, backend="cp", rank=20, iters=50)
    monkeypatch.setenv("MLIP_CACHE_DIR", str(tmp_path / "writable"))
    b = TensorProduct(in1, in2, out, backend="cp", rank=20, iters=50)
    assert torch.equal(a.impl._const64["A"], b.impl._const64["A"])
    # one finished file under its final name, no temporary left beside it
    assert [p.suffix for p in cache_dir().iterdir()] == [".npz"]


def test_failed_cache_write_leaves_nothing(tmp_path, monkeypatch):
    """A write that fails half-way (a full disk) leaves neither a partial file under the final
    name nor a temporary, and is not an error."""
    monkeypatch.setenv("MLIP_CACHE_DIR", str(tmp_path))

    def full_disk(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    in1, in2, out = case("channelwise", 2, C=2)
    tp = TensorProduct(in1, in2, out, backend="cp", rank=20, iters=50)
    assert tp.impl.rank == 20
    assert list(cache_dir().iterdir()) == []


@pytest.mark.parametrize("mode", ["channelwise", "elementwise"])
def test_chunk_size_follows_the_rank(mode):
    """The CPU chunk is sized by the largest intermediate, ``u = A^T x1`` with C R numbers per
    sample (R above the irreps' dimension at the default rank), not by the features' C d."""
    from mlip.kernels.tp.interface import CHUNK_FLOATS

    in1, in2, out = case(mode, 4, C=8)
    tp = TensorProduct(in1, in2, out, mode=mode, backend="cp")
    s = tp.impl.spec
    assert tp.impl.rank > max(s.d1, s.d2, s.d3)
    assert tp.impl.floats_per_sample() == 8 * tp.impl.rank
    assert tp.chunk_size == max(16, CHUNK_FLOATS // (8 * tp.impl.rank))
    low = TensorProduct(in1, in2, out, mode=mode, backend="cp", rank=2)  # below d: the features
    assert low.impl.floats_per_sample() == 8 * max(s.d1, s.d2, s.d3)
