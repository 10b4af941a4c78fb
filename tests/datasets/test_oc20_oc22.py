"""OC20 S2EF (extxyz + txt, .xz, LMDB of pickled Data) and OC22 LMDB -> HDF5."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mlip.datasets import DataError, HDF5Dataset, convert
from mlip.datasets.references import ElementEnergies
from mlip.datasets.sources import SourceOptions
from mlip.datasets.testing import atoms_to_data, interrupting_append, write_data_lmdb, write_lmdb, write_oc20_extxyz

DATA = Path(__file__).resolve().parent / "data"

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
    assert r.n_structures == len(flat) > 11
    ds = HDF5Dataset(r.paths[0])
    # numeric key order (structure i = entry str(i), as fairchem indexes), not LMDB's b"0", b"1", b"10", ...
    for i, (sid, fid, a) in enumerate(flat):
        d = ds[i]
        assert (int(d.trajectory_id), int(d.frame_id)) == (sid, fid)
        assert d.energy.item() == pytest.approx(a.get_potential_energy() - REFS[sid], abs=1e-5)
        np.testing.assert_allclose(d.pos.numpy(), a.positions, atol=1e-5)
        np.testing.assert_allclose(d.forces.numpy(), a.get_forces(apply_constraint=False), atol=1e-5)
        assert d.pbc.all() and d.tags.tolist() == a.get_tags().tolist()
    attrs = ds.shards[0].attrs
    assert attrs["lmdb_key_order"].startswith("numeric")
    assert "LMDB Data field y " in attrs["energy_reference"]
    assert src.exists()


@pytest.mark.parametrize("layout", ["2021", "fairchem"])
def test_lmdb_writer_field_sets(tmp_path, co_cu_systems, layout):
    """The 2021 S2EF field set and fairchem's current writer (energy/forces, uint8 Z, int32 fixed,
    wrapped positions, plain-int fid) convert to the same structures."""
    flat = _flat(co_cu_systems)
    datas = [atoms_to_data(a, sid, fid, layout=layout) for sid, fid, a in flat]
    if layout == "fairchem":
        assert datas[0].atomic_numbers.dtype == torch.uint8 and datas[0].fixed.dtype == torch.int32
        assert isinstance(datas[0].fid, int) and "y" not in datas[0] and "force" not in datas[0]
    src = write_data_lmdb(tmp_path / "d.lmdb", datas, length_key=layout == "2021")
    r = convert("oc20", [src], tmp_path / "out.h5", progress=False)
    ds = HDF5Dataset(r.paths[0])
    assert len(ds) == len(flat)
    for i, (sid, fid, a) in enumerate(flat):
        d = ds[i]
        pos = a.get_positions(wrap=layout == "fairchem")
        np.testing.assert_allclose(d.pos.numpy(), pos, atol=1e-5)
        assert d.energy.item() == pytest.approx(a.get_potential_energy(), abs=1e-5)
        np.testing.assert_allclose(d.forces.numpy(), a.get_forces(apply_constraint=False), atol=1e-5)
        assert d.atomic_numbers.tolist() == a.numbers.tolist()
        assert d.fixed.tolist() == (a.get_tags() == 0).tolist()
        assert (int(d.trajectory_id), int(d.frame_id)) == (sid, fid)
    ref = ds.shards[0].attrs["energy_reference"]
    assert ("LMDB Data field energy " if layout == "fairchem" else "LMDB Data field y ") in ref


def test_lmdb_non_integer_keys_byte_order(tmp_path, co_cu_systems, capsys):
    from mlip.datasets.cli import main

    frames = co_cu_systems[2][1]
    items = {str(i).encode(): pickle.dumps(atoms_to_data(a, 7, i)) for i, a in enumerate(frames)}
    items[b"meta"] = pickle.dumps(atoms_to_data(frames[0], 7, 99))
    src = write_lmdb(tmp_path / "d.lmdb", items)
    r = convert("oc20", [src], tmp_path / "o.h5", skip_bad=True, progress=False)
    assert r.report.by_kind == {"bad key": 1}
    ds = HDF5Dataset(r.paths[0])
    order = sorted(range(len(frames)), key=lambda i: str(i).encode())  # byte order: 0, 1, 10, 11, 2, ...
    assert [int(ds[j].frame_id) for j in range(len(ds))] == order
    assert "byte order" in ds.shards[0].attrs["lmdb_key_order"] and "d.lmdb" in ds.shards[0].attrs["lmdb_key_order"]
    ds.close()
    assert main(["info", str(r.paths[0])]) == 0
    assert "LMDB key order   byte order: keys are not all integers in d.lmdb" in capsys.readouterr().out


def test_lmdb_numeric_order_resumes(tmp_path, co_cu_systems):
    flat = _flat(co_cu_systems)
    src = write_data_lmdb(tmp_path / "d.lmdb", [atoms_to_data(a, sid, fid) for sid, fid, a in flat])
    with pytest.raises(KeyboardInterrupt), interrupting_append(17):
        convert("oc20", [src], tmp_path / "out", shard_size=5, progress=False)
    r = convert("oc20", [src], tmp_path / "out", shard_size=5, progress=False)
    assert r.resumed_shards == 3
    ds = HDF5Dataset(r.paths)
    assert [(int(ds[i].trajectory_id), int(ds[i].frame_id)) for i in range(len(ds))] == [(s, f) for s, f, _ in flat]


def test_is2re_lmdb_refused_naming_the_layout(tmp_path, co_cu_systems):
    frames = co_cu_systems[0][1][:3]
    src = write_data_lmdb(tmp_path / "is2re.lmdb", [atoms_to_data(a, 1, 0, layout="is2re") for a in frames])
    with pytest.raises(DataError, match=r"key '0'\]: IS2RE / relaxed-energy layout \(y_init, y_relaxed, "
                                        r"pos_relaxed; no per-atom forces\)") as info:
        convert("oc20", [src], tmp_path / "o.h5", progress=False)
    assert "missing field" not in str(info.value)
    with pytest.raises(DataError, match="no structures converted"):  # one error for the file, not one per entry
        convert("oc20", [src], tmp_path / "o.h5", skip_bad=True, progress=False)


def test_lmdb_data_without_ids(tmp_path, co_cu_systems):
    """``Data`` without ``sid`` / ``fid``: trajectory id from (file index, key number), frame id 0."""
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


def test_lmdb_without_sid_uses_key_number(tmp_path, co_cu_systems):
    frames = co_cu_systems[0][1][:3]
    items = {}
    for key, a in zip((b"100", b"3", b"20"), frames):
        d = atoms_to_data(a, 0, 0)
        del d.sid, d.fid
        items[key] = pickle.dumps(d)
    src = write_lmdb(tmp_path / "d.lmdb", items)
    r = convert("oc20", [src], tmp_path / "o.h5", progress=False)
    ds = HDF5Dataset(r.paths[0])
    assert [int(ds[i].trajectory_id) for i in range(3)] == [3, 20, 100]
    assert ds[0].energy.item() == pytest.approx(frames[1].get_potential_energy(), abs=1e-5)


@pytest.mark.parametrize("xyz_xz, txt_xz", [(True, True), (False, False), (True, False), (False, True)])
def test_extxyz_reference_file_forms(tmp_path, co_cu_systems, xyz_xz, txt_xz):
    """Each N.extxyz[.xz] takes N.txt or N.txt.xz (the download ships both compressed)."""
    import lzma

    src = write_oc20_extxyz(tmp_path / "0.extxyz", co_cu_systems, REFS, compress=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.extxyz.xz", "0.txt.xz"]
    if not xyz_xz:
        src.with_name("0.extxyz").write_bytes(lzma.decompress(src.read_bytes()))
        src.unlink()
    if not txt_xz:
        txt = tmp_path / "0.txt.xz"
        (tmp_path / "0.txt").write_bytes(lzma.decompress(txt.read_bytes()))
        txt.unlink()
    r = convert("oc20", [tmp_path], tmp_path / "out.h5", options=SourceOptions(subtract_reference=True),
                progress=False)  # a directory of the pair
    flat = _flat(co_cu_systems)
    ds = HDF5Dataset(r.paths[0])
    assert len(ds) == len(flat)
    for i in (0, len(flat) - 1):
        sid, fid, a = flat[i]
        assert ds[i].energy.item() == pytest.approx(a.get_potential_energy() - REFS[sid], abs=1e-9)
        assert (int(ds[i].trajectory_id), int(ds[i].frame_id)) == (sid, fid)


def test_extxyz_missing_reference_names_both_forms(tmp_path, co_cu_systems):
    src = write_oc20_extxyz(tmp_path / "0.extxyz", co_cu_systems[:1], REFS, compress=True)
    (tmp_path / "0.txt.xz").unlink()
    with pytest.raises(DataError, match=r"missing reference file for 0.extxyz.xz \(looked for 0.txt or 0.txt.xz\)"):
        convert("oc20", [src], tmp_path / "o.h5", progress=False)


def test_extxyz_corrupt_txt_xz(tmp_path, co_cu_systems):
    src = write_oc20_extxyz(tmp_path / "0.extxyz", co_cu_systems, REFS, compress=True)
    txt = tmp_path / "0.txt.xz"
    txt.write_bytes(txt.read_bytes()[:40])
    with pytest.raises(DataError, match=r"0.txt.xz: cannot read reference file \(corrupt or truncated"):
        convert("oc20", [src], tmp_path / "o.h5", progress=False)


def test_extxyz_free_energy_beside_energy(tmp_path, co_cu_systems):
    """OC20 extxyz frames carry ``free_energy`` beside ``energy``: ``energy`` is converted."""
    src = write_oc20_extxyz(tmp_path / "0.extxyz", co_cu_systems, REFS, free_energy_shift=-0.375)
    comment = src.read_text().splitlines()[1]
    assert "free_energy=" in comment and " energy=" in comment
    r = convert("oc20", [src], tmp_path / "o.h5", progress=False)
    ds = HDF5Dataset(r.paths[0])
    for i, (_sid, _fid, a) in enumerate(_flat(co_cu_systems)):
        assert ds[i].energy.item() == pytest.approx(a.get_potential_energy(), abs=1e-9)
    assert ds.shards[0].attrs["energy_key"] == "energy"
    r = convert("oc20", [src], tmp_path / "f.h5", options=SourceOptions(energy_key="free_energy"), progress=False)
    assert HDF5Dataset(r.paths[0])[0].energy.item() == pytest.approx(
        co_cu_systems[0][1][0].get_potential_energy() - 0.375, abs=1e-9)


def test_oc22_real_linear_reference(tmp_path, co_cu_systems):
    """fairchem's OC22 linear reference (configs/oc22/linref/oc22_linfit_coeffs.npz, committed excerpt)."""
    npz = DATA / "oc22_linfit_coeffs.npz"
    coeff = np.load(npz)["coeff"]
    assert coeff.shape == (100,)
    flat = _flat(co_cu_systems)[:4]
    src = write_data_lmdb(tmp_path / "oc22.lmdb", [atoms_to_data(a, s, f, layout="fairchem") for s, f, a in flat])
    opts = SourceOptions(element_energies=ElementEnergies.load(npz))
    r = convert("oc22", [src], tmp_path / "out.h5", options=opts, progress=False)
    ds = HDF5Dataset(r.paths[0])
    for j, (_s, _f, a) in enumerate(flat):
        ref = sum(coeff[z] for z in a.numbers)
        assert ds[j].energy.item() == pytest.approx(a.get_potential_energy() - ref, abs=1e-4)
    attrs = ds.shards[0].attrs
    assert attrs["energy_reference"] == ("total DFT energy (from the LMDB Data field energy) minus the linear "
                                         "reference from oc22_linfit_coeffs.npz")
