"""Silent corruption is refused: structure checks at open, checksums on read, duplicates, old shards.

Every case is a real HDF5 file changed the way a bug or a bad disk changes it (a shifted or
out-of-order offset, bad split indices, a flipped byte anywhere, a shard overwritten by a copy
of another); each must give a DataError that names the file and the dataset, never wrong data
or a raw h5py/numpy error.
"""

import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest

from mlip.datasets import DataError, HDF5Dataset, ShardReader, StreamingDataset, dataset_info, split_shards
from mlip.datasets.info import format_info
from mlip.datasets.manifest import new_manifest, write_manifest
from mlip.datasets.splits import splits_path
from mlip.datasets.testing import write_synthetic_shard

SMALL = {"atom_chunk": 64, "structure_chunk": 16}


def _shard(path, n=40, natoms=3, seed=0):
    return write_synthetic_shard(path, n, natoms, seed=seed, **SMALL)


def _everything(path) -> dict:
    """Every array of a shard and its splits, read through ShardReader."""
    r = ShardReader(path)
    try:
        out = {k: np.concatenate([b.arrays[k] for b in r.iter_blocks(size=7)]) for k in ("positions", "energy",
                                                                                          "atomic_numbers", "natoms")}
        out.update({f"split {k}": r.split_indices(k) for k in r.splits})
        out["attrs"] = {k: v for k, v in r.attrs.items() if k != "created"}
        return out
    finally:
        r.close()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (a[k] == b[k]) if isinstance(a[k], dict) else np.array_equal(a[k], b[k]) for k in a)


# -- structure checks at open ---------------------------------------------------
def test_shifted_offset_is_refused_with_file_and_dataset(tmp_path):
    path = _shard(tmp_path / "s.h5")
    with h5py.File(path, "r+", locking=False) as f:  # a buggy writer: atoms regrouped, ends intact
        f["offsets"][7] += 1
    for make in (ShardReader, HDF5Dataset, StreamingDataset, dataset_info):
        with pytest.raises(DataError, match=r"s.h5 \[offsets\]: offsets disagree with natoms at structure 6: "
                                            r"offsets give 4 atoms, natoms 3"):
            make(path)


def test_out_of_order_offset_names_the_file(tmp_path):
    path = _shard(tmp_path / "s.h5")
    with h5py.File(path, "r+", locking=False) as f:
        f["offsets"][5] = f["offsets"][9]  # was: "repeats may not contain negative values", no file name
    with pytest.raises(DataError, match=r"s.h5 \[offsets\]: offsets decrease at structure 5"):
        HDF5Dataset(path)


def _old_style_splits(path, parts: dict):
    with h5py.File(path, "r+", locking=False) as f:
        g = f.create_group("splits")
        for k, v in parts.items():
            g[k] = np.asarray(v, np.int64)


def test_in_shard_split_indices_out_of_range_or_shared_are_refused(tmp_path):
    path = _shard(tmp_path / "a.h5")
    _old_style_splits(path, {"train": [0, 1, 40], "val": [2]})
    with pytest.raises(DataError, match=r"a.h5 \[dataset 'splits/train'\]: index out of range: structure 40 "
                                        r"in a shard of 40"):
        HDF5Dataset(path, split="train")
    path = _shard(tmp_path / "b.h5")
    _old_style_splits(path, {"train": [0, 1, 2], "val": [2, 3], "test": [4]})
    with pytest.raises(DataError, match=r"b.h5 \[dataset 'splits/val'\]: overlapping splits: structure 2 is in "
                                        r"both 'train' and 'val'"):
        StreamingDataset(path, split="val")
    path = _shard(tmp_path / "c.h5")
    _old_style_splits(path, {"train": [3, 1]})
    with pytest.raises(DataError, match=r"c.h5 \[dataset 'splits/train'\]: bad value: split indices are not sorted"):
        ShardReader(path)


# -- checksums ------------------------------------------------------------------
def _chunk_offset(path, name, chunk=0) -> int:
    with h5py.File(path, "r", locking=False) as f:
        return f[name].id.get_chunk_info(chunk).byte_offset


def _flip(path, pos, bit=0x10):
    with open(path, "r+b") as fh:
        fh.seek(pos)
        b = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([b[0] ^ bit]))


@pytest.mark.parametrize("name", ["positions", "forces", "energy", "natoms", "offsets", "atomic_numbers"])
def test_flipped_data_byte_fails_its_checksum_naming_file_and_dataset(tmp_path, name):
    path = _shard(tmp_path / "s.h5", n=40)
    r = ShardReader(path)
    assert r.checksums == "all"
    _flip(path, _chunk_offset(path, name) + 5)
    where = rf"s.h5 \[(dataset ')?{name}'?.*\]: checksum mismatch \(corrupt file\)"
    with pytest.raises(DataError, match=where):
        if name in ("offsets", "natoms"):  # read whole at open
            ShardReader(path)
        else:
            r.read_block(0, 10)
    if name not in ("offsets", "natoms"):
        with pytest.raises(DataError, match=where):
            list(StreamingDataset(path, shuffle=False))
        with pytest.raises(DataError, match=where):
            HDF5Dataset(path)[0]


def test_flipped_attribute_byte_fails_the_attribute_checksum(tmp_path):
    path = _shard(tmp_path / "s.h5", n=10)
    data = path.read_bytes()
    pos = data.index(b"synthetic")  # attr source, a string: in HDF5's global heap, not checksummed by HDF5
    _flip(path, pos + 3)
    with pytest.raises(DataError, match=r"s.h5 \[root attributes\]: checksum mismatch"):
        HDF5Dataset(path)


def test_any_flipped_byte_gives_the_same_data_or_a_data_error(tmp_path):
    """A sweep over the whole file: no flipped byte may change what is read silently, nor give
    anything but a DataError (was: raw RuntimeError/KeyError, or schema=None)."""
    path = _shard(tmp_path / "s.h5", n=24, natoms=2)
    split_shards([path], (0.5, 0.25, 0.25), seed=1)
    ref = _everything(path)
    data = path.read_bytes()
    bad = tmp_path / "bad.h5"
    shutil.copy(splits_path(path), splits_path(bad))
    outcomes = {"same": 0, "DataError": 0}
    for pos in range(3, len(data), 47):  # ~460 positions over every region of the file
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        bad.write_bytes(flipped)
        try:
            got = _everything(bad)
        except DataError as err:
            assert "bad.h5" in str(err)
            outcomes["DataError"] += 1
            continue
        got["attrs"] = ref["attrs"] if got["attrs"] == ref["attrs"] else got["attrs"]
        assert _same(got, ref), f"byte {pos} changed the data silently"
        outcomes["same"] += 1
    assert outcomes["DataError"] > outcomes["same"], outcomes  # most bytes of a small shard matter


def test_flipped_splits_file_byte_gives_the_same_splits_or_a_data_error(tmp_path):
    path = _shard(tmp_path / "s.h5", n=300)
    split_shards([path], seed=2)
    ref = {k: ShardReader(path).split_indices(k) for k in ("train", "val", "test")}
    side = splits_path(path)
    text = side.read_bytes()
    errors = 0
    for pos in range(0, len(text), 3):
        flipped = bytearray(text)
        flipped[pos] ^= 0x01
        side.write_bytes(flipped)
        try:
            r = ShardReader(path)
            got = {k: r.split_indices(k) for k in ("train", "val", "test")}
        except DataError as err:
            assert "s.h5.splits.json" in str(err)
            errors += 1
            continue
        assert all(np.array_equal(got[k], ref[k]) for k in ref), f"byte {pos} changed the splits silently"
    assert errors > 0


# -- duplicates -----------------------------------------------------------------
def test_shard_overwritten_by_a_copy_of_another_is_reported(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    paths = [_shard(d / f"shard-0000{i}.h5", seed=i) for i in range(3)]
    m = new_manifest("synthetic", {}, [])
    m.update(complete=True, shards=[{"path": p.name, "n_structures": 40, "n_atoms": 120} for p in paths])
    write_manifest(d, m)
    assert len(HDF5Dataset(d)) == 120
    shutil.copy(paths[0], paths[2])
    for make in (HDF5Dataset, StreamingDataset, dataset_info):
        with pytest.raises(DataError, match=r"shard-00002.h5: duplicate shard: a copy of .*shard-00000.h5"):
            make(d)
    with pytest.raises(DataError, match="duplicate shard: the same file as"):
        HDF5Dataset([paths[1], paths[1]])


# -- old shards -----------------------------------------------------------------
def _legacy_copy(src, dst):
    """The shard as mlip wrote it before checksums: no fletcher32, no uid, no attribute digest,
    splits inside the file."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        for k, v in f.attrs.items():
            if k not in ("uid", "checksums", "attrs_sha256"):
                g.attrs[k] = v
        for name, ds in f.items():
            g.create_dataset(name, data=ds[:], chunks=ds.chunks, maxshape=ds.maxshape)
        n = f["energy"].shape[0]
        s = g.create_group("splits")
        s.attrs.update({"by": "trajectory", "seed": 0, "fractions": json.dumps([0.5, 0.25, 0.25])})
        s["train"], s["val"], s["test"] = np.arange(0, n // 2), np.arange(n // 2, n - 5), np.arange(n - 5, n)
    return dst


def test_old_shards_without_checksums_stay_readable_and_info_says_so(tmp_path):
    old = _legacy_copy(_shard(tmp_path / "new.h5"), tmp_path / "old.h5")
    r = ShardReader(old)
    assert r.checksums == "none" and r.splits_source == "in-shard" and r.uid.startswith("legacy-")
    assert r.splits == {"train": 20, "val": 15, "test": 5}
    assert len(HDF5Dataset(old, split="val")) == 15
    info = dataset_info([old])
    assert info["checksums"] == {"verified": 0, "without": [str(old)]}
    assert "checksums        NONE in 1 of 1 file(s)" in format_info(info)
    assert "fletcher32 on every dataset" in format_info(dataset_info(tmp_path / "new.h5"))
    # re-splitting an old shard writes a side file; the shard's bytes stay as they were
    digest = hashlib.sha256(old.read_bytes()).hexdigest()
    split_shards([old], (0.8, 0.1, 0.1), seed=4)
    assert hashlib.sha256(old.read_bytes()).hexdigest() == digest
    r = ShardReader(old)
    assert r.splits_source == "side file" and sum(r.splits.values()) == 40 and r.split_meta["seed"] == 4


def test_splits_file_of_another_shard_is_refused(tmp_path):
    a, b = _shard(tmp_path / "a.h5"), _shard(tmp_path / "b.h5", seed=1)
    split_shards([a])
    shutil.copy(splits_path(a), splits_path(b))
    with pytest.raises(DataError, match=r"b.h5.splits.json: splits file of another shard"):
        HDF5Dataset(b, split="train")
