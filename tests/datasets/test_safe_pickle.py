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
