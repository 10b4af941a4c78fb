"""OC20 S2EF (extxyz + txt, .xz, LMDB of pickled Data) and OC22 LMDB -> HDF5."""

import numpy as np
import pytest

from mlip.datasets import HDF5Dataset, convert
from mlip.datasets.references import ElementEnergies
from mlip.datasets.sources import SourceOptions
from mlip.datasets.testing import atoms_to_data, write_data_lmdb, write_oc20_extxyz

REFS = {1000: -15.25, 1001: 3.5, 1002: 0.125}


def _flat(systems):
    return [(sid, fid, a) for sid, frames in systems for fid, a in enumerate(frames)]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("subtract", [False, True])
def test_extxyz_txt(tmp_path, co_cu_systems, compress, subtract):
    src = write_oc20_extxyz(tmp_path / "data0000.extxyz", co_cu_systems, REFS, compress=compress)
    assert src.name.endswith(".extxyz.xz" if compress else ".extxyz")
    r = convert("oc20", [src], tmp_path / "out.h5", options=SourceOptions(subtract_reference=subtract),
                progress=False)
    flat = _flat(co_cu_systems)
    assert r.n_structures == len(flat)
    ds = HDF5Dataset(r.paths[0])
    for i, (sid, fid, a) in enumerate(flat):
        d = ds[i]
        e = a.get_potential_energy() - (REFS[sid] if subtract else 0.0)
        assert d.energy.item() == pytest.approx(e, abs=1e-9)
        np.testing.assert_allclose(d.forces.numpy(), a.get_forces(apply_constraint=False), atol=1e-6)
        np.testing.assert_allclose(d.cell[0].numpy(), a.cell.array, atol=1e-6)
        assert d.pbc[0].tolist() == a.pbc.tolist()
        assert (int(d.trajectory_id), int(d.frame_id)) == (sid, fid)
        assert d.tags.tolist() == a.get_tags().tolist()
        assert d.fixed.tolist() == (a.get_tags() == 0).tolist()
    ref = ds.shards[0].attrs["energy_reference"]
    assert ("adsorption" in ref) == subtract


def test_lmdb_data(tmp_path, co_cu_systems):
    flat = _flat(co_cu_systems)
    datas = [atoms_to_data(a, sid, fid, energy=a.get_potential_energy() - REFS[sid]) for sid, fid, a in flat]
    src = write_data_lmdb(tmp_path / "data.0000.lmdb", datas)
    r = convert("oc20", [tmp_path], tmp_path / "out.h5", progress=False)  # directory: finds *.lmdb
    assert r.n_structures == len(flat)
    ds = HDF5Dataset(r.paths[0])
    # LMDB keys iterate in byte order: b"0", b"1", b"10", b"11", ..., b"2", ...
    order = sorted(range(len(flat)), key=lambda i: str(i).encode())
    for j, i in enumerate(order):
        sid, fid, a = flat[i]
        d = ds[j]
        assert (int(d.trajectory_id), int(d.frame_id)) == (sid, fid)
        assert d.energy.item() == pytest.approx(a.get_potential_energy() - REFS[sid], abs=1e-5)
        np.testing.assert_allclose(d.pos.numpy(), a.positions, atol=1e-5)
        np.testing.assert_allclose(d.forces.numpy(), a.get_forces(apply_constraint=False), atol=1e-5)
        assert d.pbc.all() and d.tags.tolist() == a.get_tags().tolist()
    assert src.exists()


def test_lmdb_data_without_ids(tmp_path, co_cu_systems):
    """``Data`` without ``sid`` / ``fid``: trajectory id from (file index, entry), frame id 0."""
    frames = [a for _, fr in co_cu_systems for a in fr][:4]
    srcs = []
    for k in range(2):
        datas = [atoms_to_data(a, 0, 0) for a in frames]
        for d in datas:
            del d.sid, d.fid
        srcs.append(write_data_lmdb(tmp_path / f"data.{k:04d}.lmdb", datas))
    r = convert("oc20", srcs, tmp_path / "out.h5", progress=False)
    ds = HDF5Dataset(r.paths[0])
    assert [int(ds[i].trajectory_id) for i in range(8)] == [(k << 40) | e for k in range(2) for e in range(4)]
    assert [int(ds[i].frame_id) for i in range(8)] == [0] * 8


def test_oc22_linear_reference(tmp_path, co_cu_systems):
    flat = _flat(co_cu_systems)[:6]
    datas = []
    for sid, fid, a in flat:
        d = atoms_to_data(a, sid, fid)
        d.oc22, d.nads = 1, 1  # OC22 flags are carried by the real objects
        datas.append(d)
    src = write_data_lmdb(tmp_path / "oc22.lmdb", datas, length_key=False)
    coeff = np.zeros(100)
    coeff[29], coeff[6], coeff[8] = -3.5, -7.0, -4.75
    np.savez(tmp_path / "linref.npz", coeff=coeff)
    opts = SourceOptions(element_energies=ElementEnergies.load(tmp_path / "linref.npz"))
    r = convert("oc22", [src], tmp_path / "out.h5", options=opts, progress=False)
    ds = HDF5Dataset(r.paths[0])
    for j, (_sid, _fid, a) in enumerate(flat):
        ref = coeff[a.numbers].sum()
        assert ds[j].energy.item() == pytest.approx(a.get_potential_energy() - ref, abs=1e-5)
    attrs = ds.shards[0].attrs
    assert "linear reference" in attrs["energy_reference"] and attrs["level_of_theory"].startswith("PBE+U")
