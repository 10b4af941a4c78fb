"""ASE databases -> HDF5: SQLite ``.db`` / ``.json`` through ase.db, fairchem's ASE-LMDB (``.aselmdb``) read
directly; real fairchem files (oxides.db excerpt, OC20 atoms.json)."""

import importlib.util
import json
import zlib
from pathlib import Path

import ase.db
import numpy as np
import pytest

from mlip.datasets import DataError, HDF5Dataset, convert
from mlip.datasets.cli import main
from mlip.datasets.sources import SourceOptions
from mlip.datasets.sources.asedb import decode_value
from mlip.datasets.testing import aselmdb_row, interrupting_append, write_ase_db, write_aselmdb, write_lmdb

DATA = Path(__file__).resolve().parent / "data"


def _rows(co_cu_systems):
    """(atoms, key_value_pairs, data) for every frame: sid / fid as key-value pairs, an extra target in data."""
    return [(a, {"sid": sid, "fid": fid, "config_type": "slab"}, {"ref_energy": -1.5 * fid, "charges": np.arange(3)})
            for sid, frames in co_cu_systems for fid, a in enumerate(frames)]


def _check(ds, rows, *, wrap=False):
    assert len(ds) == len(rows)
    for i, (a, kvp, _) in enumerate(rows):
        d = ds[i]
        assert d.energy.item() == pytest.approx(a.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(d.forces.numpy(), a.get_forces(apply_constraint=False), atol=1e-6)
        np.testing.assert_allclose(d.pos.numpy(), a.positions, atol=1e-6)
        np.testing.assert_allclose(d.cell[0].numpy(), a.cell.array, atol=1e-9)
        assert d.pbc[0].tolist() == a.pbc.tolist()
        assert d.tags.tolist() == a.get_tags().tolist()
        assert d.fixed.tolist() == (a.get_tags() == 0).tolist()
        assert (int(d.trajectory_id), int(d.frame_id)) == (kvp["sid"], kvp["fid"])


@pytest.mark.parametrize("suffix", [".db", ".json"])
def test_ase_db(tmp_path, co_cu_systems, suffix):
    rows = _rows(co_cu_systems)
    src = write_ase_db(tmp_path / f"slabs{suffix}", rows)
    r = convert("asedb", [src], tmp_path / "o.h5", progress=False)
    ds = HDF5Dataset(r.paths[0])
    _check(ds, rows)
    attrs = ds.shards[0].attrs
    assert attrs["source"] == "asedb" and attrs["energy_reference"] == "as stored in the ASE database (energy)"


@pytest.mark.parametrize("encoding", ["ase", "lists"])
def test_aselmdb(tmp_path, co_cu_systems, encoding):
    """Both value encodings (ase-db-backends: ASE's JSON; fairchem's orjson: nested lists); row ids in
    numeric order (1, 2, ..., 10, 11: not LMDB's byte order), deleted ids left out."""
    rows = _rows(co_cu_systems)
    assert len(rows) > 11
    src = write_aselmdb(tmp_path / "slabs.aselmdb", rows, encoding=encoding, deleted={3}, metadata={"x": 1})
    r = convert("asedb", [tmp_path], tmp_path / "o.h5", progress=False)  # directory: finds *.aselmdb
    ds = HDF5Dataset(r.paths[0])
    _check(ds, rows[:2] + rows[3:])
    assert src.exists()


def test_energy_forces_from_data_and_trajectory_keys(tmp_path, co_cu_systems):
    rows = _rows(co_cu_systems)
    for a, _, data in rows:  # OMat/OMol-style targets kept in data
        data["dft_forces"] = a.get_forces(apply_constraint=False) * 2
    src = write_aselmdb(tmp_path / "d.aselmdb", rows)
    opts = SourceOptions(energy_key="ref_energy", forces_key="dft_forces", trajectory_key="config_type")
    r = convert("asedb", [src], tmp_path / "o.h5", options=opts, progress=False)
    ds = HDF5Dataset(r.paths[0])
    for i, (a, kvp, data) in enumerate(rows):
        assert ds[i].energy.item() == data["ref_energy"]
        np.testing.assert_allclose(ds[i].forces.numpy(), 2 * a.get_forces(apply_constraint=False), atol=1e-6)
        assert int(ds[i].frame_id) == kvp["fid"]
    assert len({int(ds[i].trajectory_id) for i in range(len(ds))}) == 1  # "slab", hashed
    assert ds.shards[0].attrs["energy_reference"] == "as stored in the ASE database (ref_energy)"
    r = convert("asedb", [src], tmp_path / "f.h5", options=SourceOptions(trajectory_key="file"), progress=False)
    ds = HDF5Dataset(r.paths[0])
    assert {int(ds[i].trajectory_id) for i in range(len(ds))} == {0}
    assert [int(ds[i].frame_id) for i in range(3)] == [1, 2, 3]  # the row ids


def test_rows_without_sid_stress_and_no_constraints(tmp_path, bulk_cu_frames):
    src = write_aselmdb(tmp_path / "bulk.aselmdb", bulk_cu_frames)
    r = convert("asedb", [src], tmp_path / "o.h5", progress=False)
    ds = HDF5Dataset(r.paths[0])
    for i, a in enumerate(bulk_cu_frames):
        np.testing.assert_allclose(ds[i].stress[0].numpy(), _voigt_to_3x3(a.get_stress()), atol=1e-7)
        assert (int(ds[i].trajectory_id), int(ds[i].frame_id)) == (i + 1, i + 1)  # file 0 << 40 | row id
        assert "fixed" not in ds[i] and "tags" not in ds[i]


def _voigt_to_3x3(v):
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def test_real_oxides_db_excerpt(tmp_path, capsys):
    """20 rows of fairchem's docs/core/fine-tuning/oxides.db (DFT, ASE SQLite)."""
    src = DATA / "oxides_20.db"
    ref = list(ase.db.connect(src).select())
    assert len(ref) == 20
    out = tmp_path / "ox.h5"
    assert main(["convert", "--format", "asedb", str(src), "-o", str(out), "--quiet",
                 "--level-of-theory", "PBE (VASP)"]) == 0
    assert "wrote 20 structures" in capsys.readouterr().out
    ds = HDF5Dataset(out)
    for i, row in enumerate(ref):
        assert ds[i].energy.item() == row.energy
        np.testing.assert_allclose(ds[i].forces.numpy(), row.forces, atol=1e-6)
        assert ds[i].atomic_numbers.tolist() == row.numbers.tolist() and ds[i].pbc.all()
        assert int(ds[i].trajectory_id) == row.id  # no sid: file 0, row id
    assert ds.shards[0].attrs["level_of_theory"] == "PBE (VASP)"
    ds.close()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "source           asedb" in text and "structures       20" in text


def test_real_oc20_atoms_json(tmp_path):
    """fairchem's tests/core/models/atoms.json: an OC20 DFT frame with tags and FixAtoms (ASE JSON db)."""
    src = DATA / "oc20_atoms.json"
    row = ase.db.connect(src).get(1)
    r = convert("asedb", [src], tmp_path / "o.h5", progress=False)
    d = HDF5Dataset(r.paths[0])[0]
    assert d.energy.item() == row.energy == pytest.approx(-135.66393572)
    np.testing.assert_allclose(d.forces.numpy(), row.forces, atol=1e-6)
    assert d.tags.tolist() == row.tags.tolist()
    assert np.flatnonzero(d.fixed.numpy()).tolist() == row.constraints[0].index.tolist()
    assert int(d.fixed.sum()) == 24


def test_bad_rows(tmp_path, co_cu_systems):
    rows = _rows(co_cu_systems)[:4]
    items = {str(i).encode(): zlib.compress(json.dumps(aselmdb_row(*r), default=_lists).encode())
             for i, r in enumerate(rows, start=1)}
    no_energy = aselmdb_row(*rows[1])
    del no_energy["energy"]
    items[b"2"] = zlib.compress(json.dumps(no_energy, default=_lists).encode())
    items[b"3"] = b"not zlib"
    items[b"5"] = zlib.compress(b"[1, 2]")  # listed below nextid: a list, not a row
    items[b"nextid"] = zlib.compress(b"7")  # id 6: missing
    src = write_lmdb(tmp_path / "bad.aselmdb", items)
    with pytest.raises(DataError, match=r"bad.aselmdb \[row 2\]: missing field: energy"):
        convert("asedb", [src], tmp_path / "o.h5", progress=False)
    r = convert("asedb", [src], tmp_path / "o.h5", skip_bad=True, progress=False)
    assert r.n_structures == 2
    assert dict(r.report.by_kind) == {"missing field": 1, "corrupt value": 1, "bad record": 1, "missing row": 1}


def _lists(o):
    return o.tolist() if isinstance(o, np.ndarray) else o.item()


def test_not_an_aselmdb_and_truncated(tmp_path, co_cu_systems):
    src = write_lmdb(tmp_path / "x.aselmdb", {b"abc": b"1", b"1": b"2"})
    with pytest.raises(DataError, match="not an ASE-LMDB file: no 'nextid' key"):
        convert("asedb", [src], tmp_path / "o.h5", progress=False)
    big = write_aselmdb(tmp_path / "big.aselmdb", [a for _, fr in co_cu_systems for a in fr] * 4)
    data = big.read_bytes()
    big.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated LMDB file"):
        convert("asedb", [big], tmp_path / "o.h5", progress=False)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite" * 100)
    with pytest.raises(DataError, match=r"junk.db \[row after 0\]: cannot read ASE database"):
        convert("asedb", [junk], tmp_path / "o.h5", progress=False)


def test_decode_value_is_bounded():
    bomb = zlib.compress(b"[" + b" " * 5_000_000 + b"]")
    with pytest.raises(ValueError, match="decompresses to more than 1000 bytes"):
        decode_value(bomb, max_bytes=1000)
    assert decode_value(bomb) == []


@pytest.mark.parametrize("fmt", [".aselmdb", ".db"])
def test_resume(tmp_path, co_cu_systems, fmt):
    rows = _rows(co_cu_systems)
    src = (write_aselmdb if fmt == ".aselmdb" else write_ase_db)(tmp_path / f"s{fmt}", rows)
    with pytest.raises(KeyboardInterrupt), interrupting_append(13):
        convert("asedb", [src], tmp_path / "out", shard_size=5, progress=False)
    r = convert("asedb", [src], tmp_path / "out", shard_size=5, progress=False)
    assert r.resumed_shards == 2
    _check(HDF5Dataset(r.paths), rows)


@pytest.mark.skipif(importlib.util.find_spec("ase_db_backends") is None, reason="ase-db-backends not installed")
def test_cross_check_with_ase_db_backends(tmp_path, co_cu_systems):
    """Files written by ase-db-backends (ase.db.connect('x.aselmdb')) read the same here; files written by
    write_aselmdb read the same with ase-db-backends."""
    rows = _rows(co_cu_systems)
    theirs = tmp_path / "theirs.aselmdb"
    with ase.db.connect(str(theirs)) as db:
        for a, kvp, data in rows:
            db.write(a, key_value_pairs=kvp, data=data)
    r = convert("asedb", [theirs], tmp_path / "o.h5", progress=False)
    _check(HDF5Dataset(r.paths[0]), rows)
    ours = write_aselmdb(tmp_path / "ours.aselmdb", rows, deleted={2})
    db = ase.db.connect(str(ours), readonly=True)
    assert db.count() == len(rows) - 1
    for (a, kvp, data), row in zip(rows[:1] + rows[2:], db.select()):
        assert row.energy == a.get_potential_energy() and row.key_value_pairs == kvp
        np.testing.assert_array_equal(row.positions, a.positions)
        assert row.data["ref_energy"] == data["ref_energy"] and row.constraints[0].todict()["name"] == "FixAtoms"
