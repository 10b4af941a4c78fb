"""Writer / reader round trip, schema attributes, map-style dataset, sample contract."""

import pickle

import h5py
import numpy as np
import pytest
import torch

from mlip.datasets import DataError, HDF5Dataset, ShardReader, ShardWriter, keys, schema
from mlip.datasets.structure import checked_structure


def _structures(n, rng, optional=()):
    out = []
    for i in range(n):
        k = int(rng.integers(1, 7))
        kw = {}
        if "stress" in optional:
            kw["stress"] = rng.normal(size=(3, 3))
        if "tags" in optional:
            kw["tags"] = rng.integers(0, 3, k)
        if "fixed" in optional:
            kw["fixed"] = rng.random(k) < 0.5
        out.append(checked_structure(
            "mem", f"index {i}", positions=rng.normal(size=(k, 3)), atomic_numbers=rng.integers(1, 90, k),
            energy=rng.normal() * 1000, forces=rng.normal(size=(k, 3)), cell=np.eye(3) * 7.5,
            pbc=[True, True, i % 2 == 0], trajectory_id=i // 3, frame_id=i % 3, **kw))
    return out


@pytest.mark.parametrize("optional", [(), ("stress", "tags", "fixed")])
def test_roundtrip_equals_written(tmp_path, optional):
    rng = np.random.default_rng(0)
    structs = _structures(300, rng, optional)
    path = tmp_path / "a.h5"
    with ShardWriter(path, optional=optional, flush_atoms=97, structure_chunk=64, atom_chunk=128) as w:
        for s in structs:
            w.append(s)
    assert not tmp_path.joinpath("a.h5.tmp").exists()
    ds = HDF5Dataset(path)
    assert len(ds) == 300
    for i in (0, 1, 150, 299, -1):
        s, d = structs[i], ds[i]
        keys.check_sample(d)
        np.testing.assert_array_equal(d.pos.numpy(), s.positions)
        np.testing.assert_array_equal(d.forces.numpy(), s.forces)
        np.testing.assert_array_equal(d.atomic_numbers.numpy(), s.atomic_numbers)
        assert d.energy.item() == s.energy  # float64 kept exactly
        np.testing.assert_array_equal(d.cell[0].numpy(), s.cell)
        np.testing.assert_array_equal(d.pbc[0].numpy(), s.pbc)
        assert d.natoms.item() == s.natoms and d.trajectory_id.item() == s.trajectory_id
        assert d.frame_id.item() == s.frame_id and d.structure_id.item() == i % 300
        if optional:
            np.testing.assert_array_equal(d.stress[0].numpy(), s.stress)
            np.testing.assert_array_equal(d.tags.numpy(), s.tags)
            np.testing.assert_array_equal(d.fixed.numpy(), s.fixed)
        else:
            assert "stress" not in d and "tags" not in d


def test_layout_dtypes_chunks_and_attrs(tmp_path):
    path = tmp_path / "a.h5"
    with ShardWriter(path, attrs={"level_of_theory": "PBE", "source": "test"}) as w:
        for s in _structures(10, np.random.default_rng(1)):
            w.append(s)
    with h5py.File(path, "r", locking=False) as f:
        for fld in schema.FIELDS:
            if fld.required:
                assert f[fld.name].dtype == fld.dtype, fld.name
        assert f["positions"].chunks == (schema.ATOM_CHUNK, 3)
        assert f["energy"].chunks == (schema.STRUCTURE_CHUNK,)
        assert f["offsets"].dtype == np.int64 and f["offsets"].shape == (11,)
        a = f.attrs
        assert a["schema"] == schema.SCHEMA_NAME and a["schema_version"] == schema.SCHEMA_VERSION
        assert a["units_energy"] == "eV" and a["units_length"] == "Angstrom"
        assert a["level_of_theory"] == "PBE" and a["n_structures"] == 10
        assert f["positions"].compression is None


def test_append_arrays_and_reader_block(tmp_path):
    path = tmp_path / "a.h5"
    natoms = np.array([2, 3, 1])
    pos = np.arange(18, dtype=np.float32).reshape(6, 3)
    with ShardWriter(path) as w:
        w.append_arrays(positions=pos, forces=-pos, atomic_numbers=np.array([1, 8, 6, 1, 1, 29], np.uint8),
                        natoms=natoms, energy=np.array([-1.0, -2.0, -3.0]))
    r = ShardReader(path)
    b = r.read_block(1, 3)
    assert b.offsets.tolist() == [0, 3, 4]
    np.testing.assert_array_equal(b.arrays["positions"], pos[2:])
    assert b.arrays["trajectory_id"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="forces has shape"):
        with ShardWriter(tmp_path / "b.h5") as w:
            w.append_arrays(positions=pos, forces=pos[:2], atomic_numbers=np.ones(6, np.uint8),
                            natoms=natoms, energy=np.zeros(3))
    assert not list(tmp_path.glob("b.h5*"))  # neither b.h5 nor b.h5.tmp


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "a.h5"
    with pytest.raises(RuntimeError):
        with ShardWriter(path) as w:
            for s in _structures(5, np.random.default_rng(2)):
                w.append(s)
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_inconsistent_optional_fields_rejected(tmp_path):
    rng = np.random.default_rng(3)
    with_tags = _structures(1, rng, ("tags",))[0]
    with ShardWriter(tmp_path / "a.h5") as w:
        with pytest.raises(DataError, match="inconsistent fields"):
            w.append(with_tags)


def test_dataset_pickles_and_reopens_after_use(tmp_path):
    path = tmp_path / "a.h5"
    with ShardWriter(path) as w:
        for s in _structures(20, np.random.default_rng(4)):
            w.append(s)
    ds = HDF5Dataset(path)
    first = ds[5]
    clone = pickle.loads(pickle.dumps(ds))  # handles are dropped, reopened lazily
    assert torch.equal(clone[5].pos, first.pos)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, shuffle=False)
    ids = [int(d.structure_id) for d in loader]
    assert ids == list(range(20))


def test_sample_contract_documented():
    for name, key in keys.SAMPLE_KEYS.items():
        assert "index" not in name  # torch_geometric would shift such keys when batching
        assert key.doc
    assert keys.SAMPLE_KEYS["energy"].dtype == torch.float64
