"""mlip-data convert / info / split: sharding, atomic output, resume, help."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mlip.datasets import DataError, HDF5Dataset, ShardReader, convert
from mlip.datasets import writer as writer_mod
from mlip.datasets.cli import _parser, main
from mlip.datasets.testing import pubchemqcr_steps, write_pubchemqcr_lmdb


@pytest.fixture()
def pcq_source(tmp_path, rmd17_frames):
    """60 molecules x 3 DFT_1st steps; molecule 50 has a bad step (no gradient)."""
    records = {}
    for cid in range(1, 61):
        steps = pubchemqcr_steps(rmd17_frames[cid % 40: cid % 40 + 3])
        if cid == 50:
            steps[1].pop("gradient")
        records[cid] = {"pm3": None, "hf": None, "DFT_1st": steps, "DFT_2nd": None}
    return write_pubchemqcr_lmdb(tmp_path / "src.lmdb", records)


def _energies(path):
    with h5py.File(path, "r", locking=False) as f:
        return f["energy"][:]


def test_cli_single_file_info_split(tmp_path, rmd17_excerpt, capsys):
    out = tmp_path / "e.h5"
    assert main(["convert", "--format", "extxyz", str(rmd17_excerpt), "-o", str(out), "--pbc", "none",
                 "--quiet"]) == 0
    assert "wrote 50 structures (450 atoms)" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "structures       50" in text and "H: 300, C: 100, O: 50" in text and "train: 40" in text
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_atoms"] == 450 and info["energy_eV"]["max"] < -4208 and info["units"]["units_energy"] == "eV"
    assert main(["split", str(out), "--by", "trajectory", "--fractions", "0.5", "0.3", "0.2", "--seed", "3"]) == 0
    assert "train 25, val 15, test 10" in capsys.readouterr().out
    reader = ShardReader(out)  # splits live next to the shard (out.h5.splits.json), never written into it
    assert reader.split_meta["seed"] == 3 and reader.splits_source == "side file"
    parts = [reader.split_indices(k) for k in ("train", "val", "test")]
    assert sorted(np.concatenate(parts).tolist()) == list(range(50))
    # existing output: refused without --overwrite (exit status 2, message names the file)
    assert main(["convert", "--format", "extxyz", str(rmd17_excerpt), "-o", str(out), "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err
    from mlip.datasets import convert
    from mlip.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match=f"{out} exists; pass --overwrite"):  # the one "output exists" error
        convert("extxyz", [rmd17_excerpt], out, progress=False)
    assert main(["convert", "--format", "extxyz", str(rmd17_excerpt), "-o", str(out), "--quiet", "--overwrite"]) == 0


def test_help_explains_every_option(capsys):
    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = capsys.readouterr().out
    for opt in ("--format", "--shard-size", "--skip-bad", "--resume", "--stage", "--energy-key", "--pbc",
                "--subtract-reference", "--element-energies", "--compression"):
        assert opt in text


def test_sharded_conversion_fail_then_resume(tmp_path, pcq_source, capsys):
    out = tmp_path / "shards"
    args = ["convert", "--format", "pubchemqcr", str(pcq_source), "-o", str(out), "--shard-size", "30", "--quiet",
            "--strict"]
    # molecule 50 (structures 147-149) is bad: with --strict and without --skip-bad the run stops in shard 4
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "key b'000000050' stage DFT_1st step 1" in err and "missing field: gradient" in err
    m = json.loads((out / "manifest.json").read_text())
    assert not m["complete"] and [s["path"] for s in m["shards"]] == [f"shard-0000{i}.h5" for i in range(4)]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + [f"shard-0000{i}.h5" for i in range(4)]
    kept = {p.name: (p.stat().st_ino, _energies(p)) for p in out.glob("shard-*.h5")}
    (out / "shard-00007.h5.tmp").write_bytes(b"stale")  # left by a killed run (older naming)
    (out / "shard-00004.h5.999999999.abcdef.tmp").write_bytes(b"stale")  # a killed process's temporary
    (out / "manifest.json.999999999.012345.tmp").write_bytes(b"stale")
    # a partial dataset is not readable as a dataset
    with pytest.raises(Exception, match="conversion incomplete"):
        HDF5Dataset(out)
    assert main(args + ["--skip-bad", "--resume"]) == 0
    captured = capsys.readouterr()
    assert "4 shard(s) kept from an earlier run" in captured.out and "skipped 1 bad record" in captured.err
    assert not list(out.glob("*.tmp"))
    for name, (inode, energies) in kept.items():  # kept, not rewritten (only the splits are updated)
        assert (out / name).stat().st_ino == inode and np.array_equal(_energies(out / name), energies)
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and m["n_structures"] == 179 and m["skip_report"]["skipped"] == 1
    # same content as a fresh run
    fresh = convert("pubchemqcr", [pcq_source], tmp_path / "fresh", shard_size=30, skip_bad=True, progress=False)
    a, b = HDF5Dataset(out), HDF5Dataset(fresh.paths)
    assert len(a) == len(b) == 179
    for i in range(0, 179, 7):
        assert a[i].energy.item() == b[i].energy.item() and int(a[i].trajectory_id) == int(b[i].trajectory_id)
    for split in ("train", "val", "test"):
        assert len(HDF5Dataset(out, split)) == len(HDF5Dataset(fresh.paths, split))
    a.close()  # HDF5 refuses to reopen a file read-write while this process has it open read-only
    assert main(["info", str(out)]) == 0 and "structures       179" in capsys.readouterr().out
    assert main(["split", str(out), "--fractions", "0.6", "0.2", "0.2"]) == 0
    capsys.readouterr()
    m = json.loads((out / "manifest.json").read_text())
    assert sum(m["splits"].values()) == 179 and m["splits"]["train"] in (107, 108)  # 36 of 60 molecules
    # complete output: a rerun is refused
    assert main(args + ["--skip-bad"]) == 2
    assert "complete conversion" in capsys.readouterr().err


def test_interrupt_leaves_no_partial_file_and_rerun_resumes(tmp_path, pcq_source, monkeypatch):
    out = tmp_path / "shards"
    real_append = writer_mod.ShardWriter.append
    calls = {"n": 0}

    def flaky_append(self, s):
        calls["n"] += 1
        if calls["n"] == 75:
            raise KeyboardInterrupt
        return real_append(self, s)

    monkeypatch.setattr(writer_mod.ShardWriter, "append", flaky_append)
    with pytest.raises(KeyboardInterrupt):
        convert("pubchemqcr", [pcq_source], out, shard_size=30, skip_bad=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.h5", "shard-00001.h5"]
    monkeypatch.setattr(writer_mod.ShardWriter, "append", real_append)
    r = convert("pubchemqcr", [pcq_source], out, shard_size=30, skip_bad=True, progress=False)  # plain rerun
    assert r.resumed_shards == 2 and r.n_structures == 179 and len(r.paths) == 6


def test_single_file_interrupted_leaves_nothing(tmp_path, pcq_source, monkeypatch):
    def boom(self, s):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer_mod.ShardWriter, "append", boom)
    with pytest.raises(KeyboardInterrupt):
        convert("pubchemqcr", [pcq_source], tmp_path / "o.h5", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.lmdb"]


def test_resume_refuses_other_options_or_nothing(tmp_path, pcq_source):
    out = tmp_path / "shards"
    with pytest.raises(FileNotFoundError, match="no partial conversion"):
        convert("pubchemqcr", [pcq_source], out, resume=True, progress=False)
    from mlip.datasets.sources import SourceOptions

    with pytest.raises(DataError, match="missing field: gradient"):  # molecule 50, --strict without --skip-bad
        convert("pubchemqcr", [pcq_source], out, shard_size=30, options=SourceOptions(strict=True), progress=False)

    with pytest.raises(ValueError, match="other sources or options"):
        convert("pubchemqcr", [pcq_source], out, shard_size=30, options=SourceOptions(stage="all"), progress=False)
    r = convert("pubchemqcr", [pcq_source], out, shard_size=30, skip_bad=True, overwrite=True, progress=False)
    assert r.resumed_shards == 0 and r.n_structures == 179


def test_compression_option(tmp_path, rmd17_excerpt):
    r = convert("extxyz", [rmd17_excerpt], tmp_path / "c.h5", compression="lzf", progress=False)
    with h5py.File(r.paths[0], "r", locking=False) as f:
        assert f["positions"].compression == "lzf"
    assert len(HDF5Dataset(r.paths[0])) == 50
    assert os.path.getsize(r.paths[0]) > 0


def test_lmdb_is_an_optional_extra(tmp_path, pcq_source, rmd17_excerpt, monkeypatch, capsys):
    from mlip.datasets.sources.lmdb_files import import_lmdb
    from mlip.datasets.testing import write_lmdb

    monkeypatch.setitem(sys.modules, "lmdb", None)  # as if the lmdb package were not installed
    with pytest.raises(ImportError, match=r"pip install 'mlip\[lmdb\]'"):
        import_lmdb()
    with pytest.raises(ImportError, match=r"pip install 'mlip\[lmdb\]'"):
        write_lmdb(tmp_path / "x.lmdb", {b"k": b"v"})
    assert main(["convert", "--format", "pubchemqcr", str(pcq_source), "-o", str(tmp_path / "p.h5"), "--quiet"]) == 2
    assert "pip install 'mlip[lmdb]'" in capsys.readouterr().err
    assert not (tmp_path / "p.h5").exists()
    # a fresh interpreter without lmdb: the CLI, its help and extxyz conversion work
    code = ("import sys; sys.modules['lmdb'] = None\n"
            "from mlip.datasets.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            f"sys.exit(main(['convert', '--format', 'extxyz', {str(rmd17_excerpt)!r}, '-o', {str(tmp_path / 'e.h5')!r},"
            " '--quiet']))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "mlip-data" in run.stdout and "wrote 50 structures" in run.stdout
