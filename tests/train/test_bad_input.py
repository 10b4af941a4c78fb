"""Bad input gives a clear ValueError (or subclass) and overwrites nothing."""

from __future__ import annotations

import shutil

import ase.io
import numpy as np
import pytest
import torch

from mlip.train import CheckpointError, ConfigError, DataError, RunExistsError, export_checkpoint, fit, load_checkpoint
from mlip.train.cli import main
from mlip.train.config import config_from_dict


@pytest.fixture(scope="module")
def done(tmp_path_factory, cache_dir, t):
    """A finished 4-step run to damage copies of."""
    out = tmp_path_factory.mktemp("bad") / "run"
    cfg = t.config(out, cache_dir, train={"max_steps": 4, "checkpoint_every": 2, "val_every": 2})
    fit(config_from_dict(cfg))
    return out, cfg


def _copy(done, tmp_path):
    src, cfg = done
    out = tmp_path / "run"
    shutil.copytree(src, out)
    return out, dict(cfg, out=str(out))


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_names_unknown_key_and_wrong_type(tmp_path, capsys, t):
    cfg = t.write(tmp_path / "c.yaml", {"model": {"num_chanels": 4}})
    assert main(["fit", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "model.num_chanels" in err and "num_channels" in err
    assert main(["fit", str(t.write(tmp_path / "d.yaml", {})), "model.tp_backend=fast"]) == 2
    err = capsys.readouterr().err
    assert "model.tp_backend" in err and "'grid'" in err and "'cp'" in err


def test_dataset_without_forces(tmp_path, cache_dir, t):
    frames = ase.io.read(t.ETHANOL, ":5")
    nof = tmp_path / "noforces.xyz"
    with open(nof, "w") as f:
        for a in frames:
            b = a.copy()
            b.info = {"Energy": a.info["Energy"]}
            ase.io.write(f, b, format="extxyz")
    out = tmp_path / "run"
    cfg = t.config(out, tmp_path / "cache", data={"train": [str(nof)]})
    with pytest.raises(DataError, match=r"noforces\.xyz.*no forces.*forces_weight"):
        fit(config_from_dict(cfg))
    assert not out.exists()


def test_validation_elements_absent_from_training(tmp_path, cache_dir, t):
    frames = ase.io.read(t.ETHANOL, ":4")
    val = tmp_path / "val_with_n.xyz"
    for a in frames:
        a.numbers[8] = 7  # O -> N
    ase.io.write(val, frames, format="extxyz")
    out = tmp_path / "run"
    cfg = t.config(out, cache_dir, data={"val": [str(val)], "val_split": None})
    with pytest.raises(DataError, match=r"element\(s\) \['N'\] absent from the training data"):
        fit(config_from_dict(cfg))
    assert not out.exists()


def test_existing_run_is_not_overwritten(done, tmp_path):
    out, cfg = _copy(done, tmp_path)
    before = _snapshot(out)
    with pytest.raises(RunExistsError, match="--resume"):
        fit(config_from_dict(cfg))
    assert _snapshot(out) == before


def _damaged_resume(done, tmp_path, damage):
    out, cfg = _copy(done, tmp_path)
    last = out / "checkpoints" / "last.pt"
    damage(last)
    before = _snapshot(out)
    with pytest.raises(CheckpointError) as err:
        fit(config_from_dict(dict(cfg, train=dict(cfg["train"], max_steps=8))), resume=True)
    assert _snapshot(out) == before
    return str(err.value)


def test_incompatible_checkpoint_version(done, tmp_path):
    def bump(path):
        ck = torch.load(path, weights_only=True)
        ck["format_version"] = 99
        torch.save(ck, path)

    msg = _damaged_resume(done, tmp_path, bump)
    assert "version 99" in msg and "incompatible" in msg


def test_corrupted_checkpoint(done, tmp_path):
    def truncate(path):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    msg = _damaged_resume(done, tmp_path, truncate)
    assert "corrupted" in msg and "last.pt" in msg


def test_foreign_file_and_changed_setup(done, tmp_path):
    msg = _damaged_resume(done, tmp_path, lambda p: torch.save({"weights": torch.zeros(3)}, p))
    assert "not an mlip training checkpoint" in msg
    out, cfg = _copy(done, tmp_path / "b")
    cfg["model"] = dict(cfg["model"], num_channels=8)
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match=r"model\.num_channels: checkpoint 4, now 8"):
        fit(config_from_dict(cfg), resume=True)
    assert _snapshot(out) == before


def test_export_refuses_bad_checkpoint_and_keeps_target(done, tmp_path):
    out, _ = _copy(done, tmp_path)
    bad = out / "checkpoints" / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    target = tmp_path / "model.pt"
    target.write_bytes(b"keep me")
    with pytest.raises(CheckpointError):
        export_checkpoint(bad, target)
    assert target.read_bytes() == b"keep me"
    assert main(["export", str(bad), "-o", str(target)]) == 2
    # a model file is not a checkpoint either
    with pytest.raises(CheckpointError, match="model file"):
        load_checkpoint(out / "model.pt")


def test_resume_without_checkpoint(tmp_path, cache_dir, t):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        fit(config_from_dict(t.config(tmp_path / "none", cache_dir)), resume=True)
    assert not (tmp_path / "none").exists()
