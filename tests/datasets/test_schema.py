"""Writer / reader round trip, schema attributes, map-style dataset, sample contract."""

import os
import pickle

import h5py
import numpy as np
import pytest
import torch
from ase.data import chemical_symbols

from mlip.datasets import (
    DataError,
    HDF5Dataset,
    ShardReader,
    ShardWriter,
    composition_stats,
    keys,
    schema,
    split_shards,
)
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]  # no temporary file left
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


def test_writer_temporary_is_per_process(tmp_path):
    path = tmp_path / "a.h5"
    w1, w2 = ShardWriter(path), ShardWriter(path)  # e.g. two processes converting to the same file
    assert w1.tmp != w2.tmp and w1.tmp.parent == tmp_path and f"a.h5.{os.getpid()}." in w1.tmp.name
    assert w1.tmp.exists() and w2.tmp.exists() and not path.exists()
    w2.abort()
    assert not w2.tmp.exists() and w1.tmp.exists()
    for s in _structures(4, np.random.default_rng(5)):
        w1.append(s)
    assert w1.close() == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"] and ShardReader(path).n_structures == 4


def test_read_block_selected_fields(tmp_path):
    path = tmp_path / "a.h5"
    with ShardWriter(path, optional=("stress",), structure_chunk=8) as w:
        for s in _structures(30, np.random.default_rng(6), ("stress",)):
            w.append(s)
    r = ShardReader(path)
    full = r.read_block(3, 17)
    part = r.read_block(3, 17, ("energy", "atomic_numbers", "stress"))
    assert list(part.arrays) == ["energy", "atomic_numbers", "stress"]
    np.testing.assert_array_equal(part.offsets, full.offsets)
    for name in part.arrays:
        np.testing.assert_array_equal(part.arrays[name], full.arrays[name])
    blocks = list(r.iter_blocks(("natoms",), size=7))
    assert [(b.start, b.stop) for b in blocks] == [(0, 7), (7, 14), (14, 21), (21, 28), (28, 30)]
    assert np.concatenate([b.arrays["natoms"] for b in blocks]).sum() == r.n_atoms
    with pytest.raises(DataError, match=r"a.h5 \[dataset 'tags'\]: missing field"):
        r.read_block(0, 2, ("tags",))


def _composition_by_hand(structs):
    xtx, xty = np.zeros((119, 119)), np.zeros(119)
    for s in structs:
        c = np.bincount(s.atomic_numbers, minlength=119).astype(float)
        xtx += np.outer(c, c)
        xty += c * s.energy
    return xtx, xty


@pytest.mark.parametrize("block", [65536, 5])
def test_composition_stats(tmp_path, block):
    rng = np.random.default_rng(7)
    structs = [_structures(40, rng), _structures(25, rng, ("stress",))]
    paths = []
    for k, group in enumerate(structs):
        paths.append(tmp_path / f"{k}.h5")
        with ShardWriter(paths[-1], optional=group[0].optional_fields()) as w:
            for s in group:
                w.append(s)
    split_shards(paths, (0.5, 0.5, 0.0), 0)
    flat = structs[0] + structs[1]
    st = composition_stats(paths, block=block)
    xtx, xty = _composition_by_hand(flat)
    np.testing.assert_allclose(st.xtx, xtx, rtol=1e-12)
    np.testing.assert_allclose(st.xty, xty, rtol=1e-12)
    assert (st.n_structures, st.n_atoms) == (65, sum(s.natoms for s in flat)) and not st.has_stress
    zs = sorted({int(z) for s in flat for z in s.atomic_numbers})
    assert st.elements == zs and st.symbols == [chemical_symbols[z] for z in zs]
    train = [group[i] for p, group in zip(paths, structs) for i in ShardReader(p).split_indices("train").tolist()]
    assert 0 < len(train) < len(flat)
    st = composition_stats(paths, "train", block=block)
    xtx, xty = _composition_by_hand(train)
    np.testing.assert_allclose(st.xtx, xtx, rtol=1e-12)
    np.testing.assert_allclose(st.xty, xty, rtol=1e-12)
    assert st.n_structures == len(train)
    assert composition_stats(paths[1:], "train").has_stress
    with pytest.raises(DataError, match=r"split 'test' holds no structures"):
        composition_stats(paths, "test")
    with pytest.raises(DataError, match=r"\[splits/holdout\]: no split 'holdout'"):
        composition_stats(paths, "holdout")


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
