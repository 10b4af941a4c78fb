"""Bad input: a DataError (ValueError) naming file, record and problem; --skip-bad counts it."""

import gzip
import json
import pickle

import h5py
import numpy as np
import pytest

from mlip.datasets import DataError, HDF5Dataset, StreamingDataset, convert
from mlip.datasets.sources import SourceOptions
from mlip.datasets.testing import (
    atoms_to_data,
    pubchemqcr_steps,
    pubchemqcr_value,
    write_data_lmdb,
    write_lmdb,
    write_oc20_extxyz,
    write_pubchemqcr_lmdb,
    write_synthetic_shard,
)


def _pcq(frames, n=3):
    return {"pm3": None, "hf": None, "DFT_1st": pubchemqcr_steps(frames[:n]), "DFT_2nd": None}


def _expect_bad(fmt, src, out, match, **kw):
    with pytest.raises(DataError, match=match) as info:
        convert(fmt, src, out, progress=False, **kw)
    assert isinstance(info.value, ValueError)
    assert not out.exists()
    return info.value


# -- PubChemQCR ---------------------------------------------------------------
@pytest.mark.parametrize("mutate, match", [
    (lambda st: st.pop("gradient"), "missing field: gradient"),
    (lambda st: st["gradient"].pop(), "bad shape: gradient has 8 atoms, coordinates 9"),
    (lambda st: st.update(energy=float("nan")), "non-finite value: energy"),
    (lambda st: st["coordinates"][0].update(atom="Qq"), "unknown element symbol 'Qq'"),
    (lambda st: st["coordinates"][1].pop("y"), "missing field"),
])
def test_pubchemqcr_bad_step(tmp_path, rmd17_frames, mutate, match):
    bad = _pcq(rmd17_frames)
    mutate(bad["DFT_1st"][1])
    src = write_pubchemqcr_lmdb(tmp_path / "p.lmdb", {702: _pcq(rmd17_frames), 887: bad})
    strict = SourceOptions(strict=True)  # incomplete steps (the first three) are skipped unless --strict
    err = _expect_bad("pubchemqcr", [src], tmp_path / "o.h5", match, options=strict)
    assert err.path == str(src) and err.where == "key b'000000887' stage DFT_1st step 1"
    r = convert("pubchemqcr", [src], tmp_path / "o.h5", skip_bad=True, options=strict, progress=False)
    assert r.n_structures == 5 and r.report.skipped == 1
    with h5py.File(r.paths[0], "r", locking=False) as f:
        assert json.loads(f.attrs["skip_report"])["skipped"] == 1


def test_pubchemqcr_corrupt_value_and_bad_key(tmp_path, rmd17_frames):
    items = {b"000000702": pubchemqcr_value(_pcq(rmd17_frames)), b"000000703": b"\x1f\x8b garbage",
             b"70x": pubchemqcr_value(_pcq(rmd17_frames)),
             b"000000704": gzip.compress(pickle.dumps(["not", "a", "dict"]))}
    src = write_lmdb(tmp_path / "p.lmdb", items)
    _expect_bad("pubchemqcr", [src], tmp_path / "o.h5", r"key b'000000703'\]: corrupt value")
    r = convert("pubchemqcr", [src], tmp_path / "o.h5", skip_bad=True, progress=False)
    assert r.n_structures == 3 and r.report.skipped == 3
    assert set(r.report.by_kind) == {"corrupt value", "bad key", "bad record"}


def test_pubchemqcr_gzip_bomb_is_refused_without_inflating(tmp_path, rmd17_frames, monkeypatch):
    """A small gzip value that inflates past the limit is a bad record, not gigabytes of memory."""
    from mlip.datasets.sources import safe_pickle

    monkeypatch.setattr(safe_pickle.gunzip_bounded, "__defaults__", (1 << 20,))  # 1 MiB limit for the test
    bomb = gzip.compress(b"\0" * (8 << 20))  # 8 MiB of zeros in ~8 KB
    items = {b"000000702": pubchemqcr_value(_pcq(rmd17_frames)), b"000000703": bomb}
    src = write_lmdb(tmp_path / "p.lmdb", items)
    _expect_bad("pubchemqcr", [src], tmp_path / "o.h5", r"key b'000000703'\]: too large")
    r = convert("pubchemqcr", [src], tmp_path / "o.h5", skip_bad=True, progress=False)
    assert r.n_structures == 3 and dict(r.report.by_kind) == {"too large": 1}


def test_truncated_and_corrupt_lmdb(tmp_path, rmd17_frames):
    good = write_pubchemqcr_lmdb(tmp_path / "a.lmdb", {702: _pcq(rmd17_frames)})
    big = write_pubchemqcr_lmdb(tmp_path / "b.lmdb", {i: _pcq(rmd17_frames, 10) for i in range(1, 30)})
    data = big.read_bytes()
    big.write_bytes(data[: len(data) // 2])
    _expect_bad("pubchemqcr", [good, big], tmp_path / "o.h5", "truncated LMDB file")
    garbage = tmp_path / "c.lmdb"
    garbage.write_bytes(b"\0" * 4096 + b"not lmdb" * 1000)
    _expect_bad("pubchemqcr", [garbage], tmp_path / "o.h5", "not a readable LMDB file")
    r = convert("pubchemqcr", [good, big, garbage], tmp_path / "o.h5", skip_bad=True, progress=False)
    assert r.n_structures == 3 and r.report.skipped == 2
    assert r.report.bad_files == [str(big), str(garbage)]


# -- OC20 / OC22 Data LMDB ----------------------------------------------------
@pytest.mark.parametrize("mutate, match", [
    (lambda d: delattr(d, "force"), "missing field: forces"),
    (lambda d: setattr(d, "force", d.force[:-1]), r"bad shape: forces has shape \(13, 3\), expected \(14, 3\)"),
    (lambda d: setattr(d, "natoms", d.natoms + 1), "natoms mismatch: natoms=15 but positions has 14 rows"),
    (lambda d: d.pos.__setitem__((0, 0), float("nan")), "non-finite value: positions"),
    (lambda d: setattr(d, "atomic_numbers", d.atomic_numbers + 200), "atomic number out of range"),
])
def test_oc20_lmdb_bad_record(tmp_path, co_cu_systems, mutate, match):
    frames = co_cu_systems[0][1][:3]
    datas = [atoms_to_data(a, 1, i) for i, a in enumerate(frames)]
    mutate(datas[1])
    src = write_data_lmdb(tmp_path / "d.lmdb", datas)
    err = _expect_bad("oc20", [src], tmp_path / "o.h5", match)
    assert err.where == "key '1'"
    r = convert("oc22", [src], tmp_path / "o.h5", skip_bad=True, progress=False)
    assert r.n_structures == 2 and r.report.skipped == 1


def test_refused_pickle_global(tmp_path, co_cu_systems):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    datas = {b"0": pickle.dumps(atoms_to_data(co_cu_systems[0][1][0], 1, 0)), b"1": pickle.dumps(Evil())}
    src = write_lmdb(tmp_path / "d.lmdb", datas)
    _expect_bad("oc20", [src], tmp_path / "o.h5", "refusing to unpickle global")


# -- extxyz -------------------------------------------------------------------
def _lines(path):
    return path.read_text().splitlines(keepends=True)


def test_truncated_extxyz(tmp_path, rmd17_excerpt):
    src = tmp_path / "t.xyz"
    src.write_text("".join(_lines(rmd17_excerpt)[: 11 * 10 + 6]))  # frame 10 has 4 of 9 atom lines
    err = _expect_bad("extxyz", [src], tmp_path / "o.h5", r"\[frame 10\]: truncated file: frame has 4 of 9")
    assert err.fatal
    r = convert("extxyz", [src], tmp_path / "o.h5", skip_bad=True, progress=False)
    assert r.n_structures == 10 and r.report.bad_files == [str(src)]


def test_truncated_xz(tmp_path, co_cu_systems):
    src = write_oc20_extxyz(tmp_path / "s.extxyz", co_cu_systems, {1000: 0.0, 1001: 0.0, 1002: 0.0}, compress=True)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])
    err = _expect_bad("oc20", [src], tmp_path / "o.h5", "s.extxyz.xz .*(truncated|corrupt)")
    assert err.fatal


@pytest.mark.parametrize("edit, match", [
    (lambda ls: ls.__setitem__(2, ls[2].replace("C", "Xx", 1)), r"\[frame 0\]: unknown element symbol 'Xx'"),
    (lambda ls: ls.__setitem__(1, ls[1].replace("Energy=-", "Energy=nan ")), r"\[frame 0\]: non-finite value: energy"),
    (lambda ls: ls.__setitem__(3, "H 0.0 0.0 0.0 1.0 2.0\n"), r"\[frame 0\]: bad atom line 1: 6 columns"),
    (lambda ls: ls.__setitem__(4, ls[4].replace(ls[4].split()[4], "nan")), r"\[frame 0\]: non-finite value: forces"),
    (lambda ls: ls.__setitem__(0, "nine\n"), r"\[frame 0\]: bad atom-count line"),
])
def test_bad_extxyz_frame(tmp_path, rmd17_excerpt, edit, match):
    ls = _lines(rmd17_excerpt)[:33]
    edit(ls)
    src = tmp_path / "b.xyz"
    src.write_text("".join(ls))
    err = _expect_bad("extxyz", [src], tmp_path / "o.h5", match)
    assert err.path == str(src)


def test_wrong_forces_shape_extxyz(tmp_path, rmd17_excerpt):
    ls = _lines(rmd17_excerpt)[:22]
    ls[1] = ls[1].replace("forces:R:3", "forces:R:2:extra:R:1")
    src = tmp_path / "b.xyz"
    src.write_text("".join(ls))
    _expect_bad("extxyz", [src], tmp_path / "o.h5", r"bad shape: forces has shape \(9, 2\)")


def test_oc20_txt_problems(tmp_path, co_cu_systems):
    src = write_oc20_extxyz(tmp_path / "s.extxyz", co_cu_systems[:1], {1000: 1.0})
    txt = tmp_path / "s.txt"
    lines = txt.read_text().splitlines(keepends=True)
    txt.write_text("".join(lines[:-2]))
    _expect_bad("oc20", [src], tmp_path / "o.h5", r"s.txt \[line 5\]: missing reference line")
    lines[1] = "garbage\n"
    txt.write_text("".join(lines))
    _expect_bad("oc20", [src], tmp_path / "o.h5", r"s.txt \[line 2\]: bad reference line 'garbage'")
    txt.unlink()
    _expect_bad("oc20", [src], tmp_path / "o.h5", "missing reference file")


# -- HDF5 ---------------------------------------------------------------------
def test_truncated_and_corrupt_hdf5(tmp_path):
    path = write_synthetic_shard(tmp_path / "s.h5", 3000, 10)
    data = path.read_bytes()
    trunc = tmp_path / "t.h5"
    trunc.write_bytes(data[: len(data) // 2])
    for cls in (HDF5Dataset, StreamingDataset):
        with pytest.raises(DataError, match=r"t.h5.*(truncated|corrupt)"):
            cls(trunc)
    junk = tmp_path / "j.h5"
    junk.write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="j.h5: cannot open HDF5 file"):
        HDF5Dataset(junk)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="not an mlip dataset shard"):
        HDF5Dataset(tmp_path / "other.h5")
    with h5py.File(path, "r+", locking=False) as f:
        f["offsets"][-1] = 5
    with pytest.raises(DataError, match=r"s.h5 \[offsets\]: offsets run 0..5, expected 0..30000"):
        HDF5Dataset(path)


def test_missing_split_named(tmp_path):
    path = write_synthetic_shard(tmp_path / "s.h5", 10, 2)
    with pytest.raises(DataError, match=r"s.h5 \[splits/train\]: no split 'train'"):
        StreamingDataset(path, split="train")


def test_missing_paths(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        HDF5Dataset(tmp_path / "nope.h5")
    with pytest.raises(DataError, match="no such file"):
        convert("extxyz", [tmp_path / "nope.xyz"], tmp_path / "o.h5", progress=False)


def test_skip_bad_cannot_hide_total_failure(tmp_path, rmd17_frames):
    bad = _pcq(rmd17_frames)
    for st in bad["DFT_1st"]:
        st.pop("energy")
    src = write_pubchemqcr_lmdb(tmp_path / "p.lmdb", {1: bad})
    with pytest.raises(DataError, match="no structures converted"):
        convert("pubchemqcr", [src], tmp_path / "o.h5", skip_bad=True, progress=False)
    assert not list(tmp_path.glob("o.h5*"))
