"""extxyz (and other ASE formats) -> HDF5: real rMD17 / 3BPA files, keys, pbc, stress."""

import gzip
import shutil

import ase.io
import numpy as np
import pytest

from mlip.datasets import DataError, HDF5Dataset, convert
from mlip.datasets.sources import SourceOptions
from mlip.datasets.sources.xyz_frames import _ase_parse, _fast_parse, iter_frames
from mlip.datasets.testing import shared_data_dir


def _check_against(ds, frames, energy_key=None):
    assert len(ds) == len(frames)
    for i, a in enumerate(frames):
        d = ds[i]
        e = a.info[energy_key] if energy_key else a.get_potential_energy()
        assert d.energy.item() == pytest.approx(e, abs=1e-9)
        np.testing.assert_allclose(d.pos.numpy(), a.positions, atol=1e-6)
        np.testing.assert_allclose(d.forces.numpy(), a.get_forces(), atol=1e-5)
        assert d.atomic_numbers.tolist() == a.numbers.tolist()


def test_rmd17_default_keys_and_pbc_auto(tmp_path, rmd17_excerpt, rmd17_frames):
    r = convert("extxyz", [rmd17_excerpt], tmp_path / "e.h5", progress=False)
    ds = HDF5Dataset(r.paths[0])
    _check_against(ds, rmd17_frames)
    assert ds.shards[0].attrs["energy_key"] == "Energy"
    # No pbc key but a Lattice: ASE's reading (periodic, 50 Å box) is kept, with a note.
    assert ds[0].pbc.all() and ds[0].cell[0, 0, 0].item() == 50.0
    assert any("--pbc none" in n for n in r.notes)


def test_rmd17_pbc_none(tmp_path, rmd17_excerpt):
    r = convert("extxyz", [rmd17_excerpt], tmp_path / "e.h5", options=SourceOptions(pbc="none"), progress=False)
    ds = HDF5Dataset(r.paths[0])
    assert not ds[0].pbc.any() and not r.notes
    assert ds.shards[0].attrs["pbc_policy"] == "none"


def test_frame_trajectories_split_by_frame_or_file(tmp_path, rmd17_excerpt):
    r = convert("extxyz", [rmd17_excerpt], tmp_path / "e.h5", progress=False)
    assert r.splits == {"train": 40, "val": 5, "test": 5}
    r = convert("extxyz", [rmd17_excerpt], tmp_path / "f.h5", progress=False,
                options=SourceOptions(trajectory_key="file"))
    assert sorted(r.splits.values()) == [0, 0, 50]  # one trajectory: all in one split


def test_3bpa_real_file(tmp_path, shared_file):
    src = shared_file("3bpa", "train_300K.xyz")
    frames = ase.io.read(src, ":40")
    head = tmp_path / "3bpa40.xyz"  # the first 40 frames, verbatim
    head.write_text("".join(src.read_text().splitlines(keepends=True)[: 40 * 29]))
    r = convert("extxyz", [head], tmp_path / "b.h5", progress=False)
    ds = HDF5Dataset(r.paths[0])
    _check_against(ds, frames)
    assert ds.shards[0].attrs["energy_key"] == "energy" and not ds[0].pbc.any()


def test_full_rmd17_aspirin(tmp_path, shared_file):
    src = shared_file("rmd17", "aspirin_train_01.xyz")
    r = convert("extxyz", [src], tmp_path / "a.h5", options=SourceOptions(pbc="none"), progress=False)
    assert r.n_structures == 1000 and r.n_atoms == 21000


def test_stress_and_gzip(tmp_path, bulk_cu_frames):
    src = tmp_path / "cu.xyz"
    ase.io.write(src, bulk_cu_frames, format="extxyz")
    gz = tmp_path / "cu.extxyz.gz"
    with open(src, "rb") as f, gzip.open(gz, "wb") as g:
        shutil.copyfileobj(f, g)
    r = convert("extxyz", [gz], tmp_path / "c.h5", progress=False)
    ds = HDF5Dataset(r.paths[0])
    _check_against(ds, bulk_cu_frames)
    from ase.stress import voigt_6_to_full_3x3_stress

    for i, a in enumerate(bulk_cu_frames):
        np.testing.assert_allclose(ds[i].stress[0].numpy(), voigt_6_to_full_3x3_stress(a.get_stress()), atol=1e-7)
        assert ds[i].pbc.all()


def test_other_ase_format(tmp_path, bulk_cu_frames):
    src = tmp_path / "cu.traj"
    ase.io.write(src, bulk_cu_frames)
    r = convert("extxyz", [src], tmp_path / "t.h5", progress=False)
    _check_against(HDF5Dataset(r.paths[0]), bulk_cu_frames)


def test_explicit_keys(tmp_path, rmd17_excerpt):
    text = rmd17_excerpt.read_text().replace("Energy=", "REF_E=").replace("forces:R:3", "my_f:R:3")
    src = tmp_path / "renamed.xyz"
    src.write_text(text)
    with pytest.raises(DataError, match="missing field: energy"):
        convert("extxyz", [src], tmp_path / "x.h5", progress=False)
    assert not (tmp_path / "x.h5").exists()
    r = convert("extxyz", [src], tmp_path / "y.h5", progress=False,
                options=SourceOptions(energy_key="REF_E", forces_key="my_f"))
    assert r.n_structures == 50


def test_fast_parser_matches_ase(tmp_path, rmd17_excerpt, bulk_cu_frames, co_cu_systems):
    files = [rmd17_excerpt]
    ase.io.write(tmp_path / "cu.xyz", bulk_cu_frames, format="extxyz")
    ase.io.write(tmp_path / "co.xyz", co_cu_systems[0][1], format="extxyz")
    files += [tmp_path / "cu.xyz", tmp_path / "co.xyz"]
    shared = shared_data_dir()
    if shared is not None and (shared / "3bpa" / "train_300K.xyz").exists():
        ase.io.write(tmp_path / "b.xyz", ase.io.read(shared / "3bpa" / "train_300K.xyz", ":5"), format="extxyz")
        files.append(tmp_path / "b.xyz")
    for path in files:
        for raw in list(iter_frames(path))[:5]:
            fast, ref = _fast_parse(path, "f", raw), _ase_parse(path, "f", raw)
            np.testing.assert_array_equal(fast.numbers, ref.numbers)
            np.testing.assert_allclose(fast.positions, ref.positions)
            assert (fast.cell is None) == (ref.cell is None)
            if fast.cell is not None:
                np.testing.assert_allclose(fast.cell, ref.cell)
            np.testing.assert_array_equal(fast.pbc, ref.pbc)
            assert fast.pbc_explicit == ref.pbc_explicit
            for k in ("forces", "tags"):
                if k in ref.arrays:
                    np.testing.assert_allclose(fast.arrays[k], ref.arrays[k])
            for k in ("energy", "Energy"):
                if k in ref.info:
                    assert float(fast.info[k]) == pytest.approx(float(ref.info[k]))
            if ref.fixed is not None:
                np.testing.assert_array_equal(fast.fixed, ref.fixed)


def test_energy_key_found_per_file(tmp_path, rmd17_excerpt, rmd17_frames):
    other = tmp_path / "lower.xyz"  # same frames, written by ASE with energy= (lower case)
    ase.io.write(other, rmd17_frames[:10], format="extxyz")
    assert "energy=" in other.read_text().splitlines()[1]
    r = convert("extxyz", [rmd17_excerpt, other], tmp_path / "m.h5", progress=False)
    ds = HDF5Dataset(r.paths[0])
    assert len(ds) == 60 and ds.shards[0].attrs["energy_key"] == "Energy,energy"
    assert ds[50].energy.item() == pytest.approx(ds[0].energy.item(), abs=1e-9)
