"""Kills and concurrent processes: real processes, SIGKILL at an injected point, a real second writer.

* a ``mlip-data split`` killed anywhere leaves the old splits (or the new), never a shard that
  readers, ``split`` or ``convert --resume`` cannot open (shards are never opened for writing);
* a ``convert`` killed between shards resumes to the data of a fresh run;
* a second ``convert`` of the same output fails at once, naming the output;
* a reader iterating while another process rewrites the splits sees one whole split each epoch.
"""

import hashlib
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mlip.datasets import HDF5Dataset, ShardReader, StreamingDataset, convert, split_shards
from mlip.datasets.cli import main
from mlip.datasets.manifest import new_manifest, write_manifest
from mlip.datasets.splits import splits_path
from mlip.datasets.testing import write_synthetic_shard

# Runs the mlip-data CLI after arming a SIGKILL of this very process at the n-th call of a
# function (module, name, n): the kill lands in the middle of the real code path.
_KILL_AT = """
import os, signal, sys, importlib
module, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
mod = importlib.import_module(module)
real, calls = getattr(mod, name), [0]
def armed(*args, **kwargs):
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(mod, name, armed)
from mlip.datasets.cli import main
sys.exit(main(sys.argv[4:]))
"""


def _run_killed_at(module, name, n, *argv):
    p = subprocess.run([sys.executable, "-c", _KILL_AT, module, name, str(n), *map(str, argv)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr)


def _dataset(tmp_path, n_shards=3, n=60):
    d = tmp_path / "ds"
    d.mkdir()
    paths = [write_synthetic_shard(d / f"shard-0000{i}.h5", n, 3, seed=i, atom_chunk=64, structure_chunk=16)
             for i in range(n_shards)]
    m = new_manifest("synthetic", {}, [])
    m.update(complete=True, shards=[{"path": p.name, "n_structures": n, "n_atoms": 3 * n} for p in paths])
    write_manifest(d, m)
    return d, paths


def _split_ids(d, split="train"):
    return HDF5Dataset(d, split)._index.tolist()


def _digests(paths):
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


@pytest.mark.parametrize("where", [
    ("mlip.atomic", "_fsync_dir", 1),  # first side file renamed in place, the others not yet written
    ("mlip.atomic", "_fsync_file", 2),  # second side file written under its temporary name, not renamed
])
def test_killed_split_leaves_the_old_splits_and_readable_shards(tmp_path, where):
    d, paths = _dataset(tmp_path)
    split_shards(paths, (0.5, 0.25, 0.25), seed=0)
    before = {s: _split_ids(d, s) for s in ("train", "val", "test")}
    digests = _digests(paths)
    _run_killed_at(*where, "split", d, "--fractions", "0.2", "0.4", "0.4", "--seed", "9")
    assert _digests(paths) == digests  # the shards themselves were never opened for writing
    # readers see the whole old state (the first shard's new run is incomplete: rolled back)
    assert {s: _split_ids(d, s) for s in ("train", "val", "test")} == before
    assert sorted(ShardReader(paths[0]).splits) == ["test", "train", "val"]
    ds = StreamingDataset(d, split="train", shuffle=False)
    assert ds.num_structures == len(before["train"]) == sum(1 for _ in ds)
    # split runs again, to the same result as an uninterrupted run
    assert main(["split", str(d), "--fractions", "0.2", "0.4", "0.4", "--seed", "9"]) == 0
    after = _split_ids(d)
    assert after != before["train"]
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    for p in paths:
        (fresh_dir / p.name).write_bytes(p.read_bytes())
    split_shards(sorted(fresh_dir.glob("*.h5")), (0.2, 0.4, 0.4), seed=9)
    assert _split_ids(fresh_dir) == after


def test_killed_first_split_leaves_no_splits_not_half_of_them(tmp_path):
    d, paths = _dataset(tmp_path)
    _run_killed_at("mlip.atomic", "_fsync_dir", 2, "split", d)  # two of three side files written
    assert [splits_path(p).exists() for p in paths] == [True, True, False]
    with pytest.raises(ValueError, match=r"no split 'train'.*run `mlip-data split`"):
        HDF5Dataset(d, "train")
    assert len(HDF5Dataset(d)) == 180


def test_killed_convert_resumes_to_a_fresh_runs_data(tmp_path, rmd17_excerpt):
    out = tmp_path / "out"
    args = ["convert", "--format", "extxyz", rmd17_excerpt, "-o", out, "--shard-size", "20", "--pbc", "none",
            "--quiet"]
    # killed as the second shard is about to be renamed to its final name (fsyncs: 1 the new manifest,
    # 2 shard 0, 3 the manifest listing it, 4 shard 1)
    _run_killed_at("mlip.atomic", "_fsync_file", 4, *args)
    m = json.loads((out / "manifest.json").read_text())
    assert not m["complete"] and [s["path"] for s in m["shards"]] == ["shard-00000.h5"]
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".tmp")) == ["manifest.json",
                                                                                   "shard-00000.h5"]
    assert main([str(a) for a in args]) == 0  # a plain rerun resumes (and removes the dead run's temporaries)
    assert not list(out.glob("*.tmp")) and not (tmp_path / "out.lock").exists()
    fresh = convert("extxyz", [rmd17_excerpt], tmp_path / "fresh", shard_size=20, progress=False)
    a, b = HDF5Dataset(out), HDF5Dataset(fresh.paths)
    assert len(a) == len(b) == 50
    assert all(a[i].energy.item() == b[i].energy.item() for i in range(50))
    assert _split_ids(out) == _split_ids(tmp_path / "fresh")


# Converts with every append slowed down (the test waits for its lock file).
_SLOW_CONVERT = """
import sys, time
from mlip.datasets import writer
real = writer.ShardWriter.append
def slow(self, s):
    time.sleep(0.05)
    return real(self, s)
writer.ShardWriter.append = slow
from mlip.datasets.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("out_name", ["one.h5", "shards"])
def test_second_convert_of_the_same_output_fails_clearly(tmp_path, rmd17_excerpt, out_name, capsys):
    out = tmp_path / out_name
    args = ["convert", "--format", "extxyz", str(rmd17_excerpt), "-o", str(out), "--pbc", "none", "--quiet"]
    first = subprocess.Popen([sys.executable, "-c", _SLOW_CONVERT, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / f"{out_name}.lock"
        deadline = time.time() + 60
        while not (lock.exists() and lock.read_text().strip()) and time.time() < deadline:
            time.sleep(0.02)
        assert lock.read_text().strip() == str(first.pid)
        assert main(args) == 2  # while the first runs
        err = capsys.readouterr().err
        assert f"{out}: another process (pid {first.pid}) is converting into this output" in err
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert "wrote 50 structures" in stdout
    assert len(HDF5Dataset(out)) == 50 and len(HDF5Dataset(out, "train")) == 40
    assert not lock.exists() and not list(tmp_path.rglob("*.tmp"))


# Rewrites the splits of a dataset over and over, cycling through fractions.
_RESPLIT = """
import sys, time
from mlip.datasets import split_shards
from mlip.datasets.manifest import resolve_paths
paths = resolve_paths(sys.argv[1])
fractions = [(0.5, 0.25, 0.25), (0.2, 0.4, 0.4), (0.8, 0.1, 0.1)]
print("go", flush=True)
end = time.time() + float(sys.argv[2])
k = 0
while time.time() < end:
    split_shards(paths, fractions[k % 3], seed=k % 3)
    k += 1
print(k, flush=True)
"""


def test_reader_during_repeated_splits_sees_one_whole_split_each_epoch(tmp_path):
    d, paths = _dataset(tmp_path, n_shards=2, n=200)
    valid = {}
    for k, fr in enumerate([(0.5, 0.25, 0.25), (0.2, 0.4, 0.4), (0.8, 0.1, 0.1)]):
        split_shards(paths, fr, seed=k)
        valid[k] = sorted(_split_ids(d))
    writer = subprocess.Popen([sys.executable, "-c", _RESPLIT, str(d), "4"], stdout=subprocess.PIPE, text=True)
    seen, epochs = set(), 0
    try:
        assert writer.stdout.readline().strip() == "go"
        while writer.poll() is None:
            ds = StreamingDataset(d, split="train", shuffle=True, seed=epochs, shuffle_buffer=64)
            ids = sorted(int(s.structure_id) for s in ds)
            assert len(ids) == ds.num_structures
            match = [k for k, v in valid.items() if v == ids]
            assert match, f"epoch {epochs}: {len(ids)} structures, not one whole split"
            seen.add(match[0])
            m = HDF5Dataset(d, "train")
            assert sorted(m._index.tolist()) in valid.values()
            epochs += 1
        runs = int(writer.stdout.readline())
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    assert writer.returncode == 0 and runs > 5 and epochs > 5
    assert len(seen) >= 2, seen  # the reader did run while the splits changed
    assert np.all(np.diff(HDF5Dataset(d, "train")._index) > 0)
