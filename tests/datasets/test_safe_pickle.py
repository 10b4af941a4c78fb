"""The restricted unpickler: real Data / tensors load, anything else is refused."""

import io
import os
import pickle

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from mlip.datasets.sources.pyg_lmdb import data_fields
from mlip.datasets.sources.safe_pickle import safe_loads


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_data_and_tensors_round_trip():
    d = Data(pos=torch.randn(4, 3), y=1.5, tags=torch.tensor([0, 1, 2, 2]), fixed=torch.tensor([1.0, 0, 0, 0]),
             cell=torch.eye(3).view(1, 3, 3), sid=7, fid=torch.tensor(3), x64=torch.arange(3, dtype=torch.float64),
             arr=np.arange(3), flag=torch.tensor([True, False]))
    for protocol in (2, 4, 5):
        out = safe_loads(pickle.dumps(d, protocol=protocol))
        f = data_fields(out)
        np.testing.assert_array_equal(f["pos"], d.pos.numpy())
        assert f["y"] == 1.5 and f["sid"] == 7 and int(f["fid"]) == 3 and f["x64"].dtype == np.float64
        np.testing.assert_array_equal(f["arr"], np.arange(3))
        assert f["flag"].tolist() == [True, False]
    assert safe_loads(pickle.dumps({"a": [1, 2.5, None, "s", (1,)], "b": np.float64(2)})) == \
        {"a": [1, 2.5, None, "s", (1,)], "b": 2.0}


def test_refuses_arbitrary_globals():
    with pytest.raises(pickle.UnpicklingError, match="posix.system|nt.system"):
        safe_loads(pickle.dumps(_Evil()))
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        safe_loads(pickle.dumps(eval))


def test_refuses_globals_hidden_in_tensor_storage_bytes():
    buf = io.BytesIO()
    torch.save(_Evil(), buf, _use_new_zipfile_serialization=False)

    class Smuggle:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (buf.getvalue(),))

    payload = pickle.dumps(Smuggle())
    with pytest.raises(pickle.UnpicklingError, match="system"):
        safe_loads(payload)


def test_legacy_pyg1_data_layout():
    # PyG 1.x pickled Data with its attributes directly in __dict__ (no _store).
    legacy = Data.__new__(Data)
    legacy.__dict__.update(pos=torch.zeros(2, 3), atomic_numbers=torch.tensor([1.0, 8.0]), y=-1.0, edge_index=None)
    out = safe_loads(pickle.dumps(legacy, protocol=2))
    assert "_store" not in out.__dict__
    f = data_fields(out)
    assert f["y"] == -1.0 and f["pos"].shape == (2, 3) and "edge_index" not in f


def _storage_bomb(numel: int) -> bytes:
    """A small pickle whose tensor storage declares ``numel`` float32 (torch's legacy storage
    blob, as ``pickle.dumps(tensor)`` embeds it) but carries 3."""
    import struct
    import sys

    import torch.serialization as ts

    legacy = io.BytesIO()
    for obj in (ts.MAGIC_NUMBER, ts.PROTOCOL_VERSION, {"protocol_version": ts.PROTOCOL_VERSION,
                "little_endian": sys.byteorder == "little", "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(obj, legacy, protocol=2)
    sentinel = object()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel, None) if obj is sentinel else None

    P(legacy, protocol=2).dump(sentinel)
    pickle.dump(["0"], legacy, protocol=2)
    legacy.write(struct.pack("<q", 3) + b"\0" * 12)
    blob = legacy.getvalue()

    class Storage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (blob,))

    return pickle.dumps(Storage(), protocol=2)


def test_tensor_storage_larger_than_its_pickle_is_refused_before_allocation():
    assert len(safe_loads(_storage_bomb(3))) == 3  # the honest blob loads
    bomb = _storage_bomb(600_000_000)  # was: a ~400-byte pickle making torch allocate 2.4 GB
    assert len(bomb) < 500
    with pytest.raises(pickle.UnpicklingError, match=r"declares 2,400,000,000 bytes .* refusing to allocate"):
        safe_loads(bomb)
    big = {"pos": torch.randn(5000, 3), "f": torch.randn(5000, 3)}  # real tensors stay within the budget
    out = safe_loads(pickle.dumps(big))
    assert torch.equal(out["pos"], big["pos"]) and torch.equal(out["f"], big["f"])
    with pytest.raises(pickle.UnpicklingError, match="refusing to allocate"):
        safe_loads(pickle.dumps(big), max_tensor_bytes=100_000)  # a caller's tighter bound (from natoms)


def test_gunzip_bounded_stops_a_decompression_bomb():
    import gzip
    import zlib

    from mlip.datasets.sources.safe_pickle import DecompressionLimitError, gunzip_bounded

    for data in (b"", b"abc" * 1000, bytes(range(256)) * 50):
        assert gunzip_bounded(gzip.compress(data)) == data == gzip.decompress(gzip.compress(data))
    assert gunzip_bounded(gzip.compress(b"a") + gzip.compress(b"b")) == b"ab"  # members, as gzip.decompress
    assert gunzip_bounded(zlib.compress(b"xyz")) == b"xyz"
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 KB inflating to 64 MiB
    assert len(bomb) < 100_000
    with pytest.raises(DecompressionLimitError, match=r"exceeds 4,194,304 bytes .* decompression bomb"):
        gunzip_bounded(bomb, limit=4 << 20)
    assert isinstance(DecompressionLimitError("x"), ValueError)
    with pytest.raises(EOFError, match="truncated"):
        gunzip_bounded(gzip.compress(b"abc" * 1000)[:-20])
    with pytest.raises(zlib.error):
        gunzip_bounded(b"not gzip at all")
