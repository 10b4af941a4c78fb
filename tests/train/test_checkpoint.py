"""Checkpoints and --resume: a resumed run ends exactly where an uninterrupted one does; a damaged,
foreign or incompatible checkpoint is refused with a clear CheckpointError and nothing is written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from mlip.train import CheckpointError, fit, load_checkpoint
from mlip.train.config import config_from_dict

STEPS = 10


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir, t):
    """An uninterrupted run of STEPS steps (float64, deterministic, 0 workers, shuffled data)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    cfg = t.config(out, cache_dir, train={"max_steps": STEPS, "checkpoint_every": 3, "val_every": 4})
    fit(config_from_dict(cfg))
    return out, cfg


def test_resume_in_a_fresh_process_matches_uninterrupted_run(reference, tmp_path, cache_dir, t):
    ref_out, ref_cfg = reference
    out = tmp_path / "run"
    cfg = dict(ref_cfg, out=str(out))
    res = fit(config_from_dict(cfg), stop_at_step=5)  # "preempted" after step 5 (between checkpoints)
    assert res.step == 5 and res.model_path is None
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 5
    p = t.cli("fit", t.write(tmp_path / "c.yaml", cfg), "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    ck, ref = out / "checkpoints" / "last.pt", ref_out / "checkpoints" / "last.pt"
    assert load_checkpoint(ck)["step"] == STEPS
    _assert_same(t.params(ck), t.params(ref))
    assert load_checkpoint(ck)["data"] == load_checkpoint(ref)["data"]
    # the metrics log of the resumed run equals the uninterrupted one, apart from timings
    drop = lambda path: [r.split(",")[:2] + r.split(",")[3:-1] for r in path.read_text().splitlines()]  # noqa: E731
    assert drop(out / "metrics.csv") == drop(ref_out / "metrics.csv")


def test_sigkill_mid_run_then_resume(tmp_path, cache_dir, t):
    # constant learning rate: the state at step k does not depend on max_steps, so a run killed
    # during a long run and resumed to step k must equal a run of k steps
    out = tmp_path / "run"
    cfg = t.config(out, cache_dir, schedule={"kind": "constant"}, train={"max_steps": 2000, "checkpoint_every": 3})
    path = t.write(tmp_path / "c.yaml", cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([t.PYTHON, "-m", "mlip.train", "fit", str(path)], cwd=t.ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if last.exists() and load_checkpoint(last)["step"] >= 6:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = load_checkpoint(last)["step"]  # readable: checkpoints are written atomically
    assert 6 <= killed_at < 2000 and killed_at % 3 == 0
    target = killed_at + 4
    p = t.cli("fit", path, "--resume", f"train.max_steps={target}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert load_checkpoint(last)["step"] == target
    ref_out = tmp_path / "ref"
    fit(config_from_dict(dict(cfg, out=str(ref_out), train=dict(cfg["train"], max_steps=target))))
    _assert_same(t.params(last), t.params(ref_out / "checkpoints" / "last.pt"))


def test_checkpoint_contents(finished_run):
    ck = load_checkpoint(finished_run.out / "checkpoints" / "last.pt")
    assert ck["step"] == 6
    assert {"model", "optimizer", "schedule", "ema", "rng", "data", "best"} <= set(ck)
    assert ck["data"] == [{"epoch": 0, "batch": 6}]  # 45 train frames, batch 4: 11 batches per epoch
    assert ck["schedule"]["step_count"] == 6


# -- refused checkpoints ---------------------------------------------------------------------
def _copy(done, tmp_path):
    src, cfg = done
    out = tmp_path / "run"
    shutil.copytree(src, out)
    return out, dict(cfg, out=str(out))


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _damaged_resume(done, tmp_path, damage):
    out, cfg = _copy(done, tmp_path)
    last = out / "checkpoints" / "last.pt"
    damage(last)
    before = _snapshot(out)
    with pytest.raises(CheckpointError) as err:
        fit(config_from_dict(dict(cfg, train=dict(cfg["train"], max_steps=8))), resume=True)
    assert _snapshot(out) == before
    return str(err.value)


def test_incompatible_checkpoint_version(short_run, tmp_path):
    def bump(path):
        ck = torch.load(path, weights_only=True)
        ck["format_version"] = 99
        torch.save(ck, path)

    msg = _damaged_resume(short_run, tmp_path, bump)
    assert "version 99" in msg and "incompatible" in msg


def test_corrupted_checkpoint(short_run, tmp_path):
    def truncate(path):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    msg = _damaged_resume(short_run, tmp_path, truncate)
    assert "corrupted" in msg and "last.pt" in msg


def test_foreign_file_and_changed_setup(short_run, tmp_path):
    msg = _damaged_resume(short_run, tmp_path, lambda p: torch.save({"weights": torch.zeros(3)}, p))
    assert "not an mlip training checkpoint" in msg
    out, cfg = _copy(short_run, tmp_path / "b")
    cfg["model"] = dict(cfg["model"], num_channels=8)
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match=r"model\.num_channels: checkpoint 4, now 8"):
        fit(config_from_dict(cfg), resume=True)
    assert _snapshot(out) == before


def test_config_keys_newer_than_the_checkpoint(short_run, tmp_path):
    """A checkpoint written before a config key existed resumes when the key keeps its default
    (the effect it had then), and is refused when the key is changed."""
    out, cfg = _copy(short_run, tmp_path)
    last = out / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=True)
    for key in ("cutoff_p", "energy_scale", "energy_shift"):  # the model section before it became PotentialConfig
        del ck["config"]["model"][key]
    torch.save(ck, last)
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match=r"model\.cutoff_p: checkpoint 5, now 6"):
        fit(config_from_dict(dict(cfg, model=dict(cfg["model"], cutoff_p=6))), resume=True)
    assert _snapshot(out) == before
    res = fit(config_from_dict(dict(cfg, train=dict(cfg["train"], max_steps=5))), resume=True)
    assert res.step == 5


def test_resume_without_checkpoint(tmp_path, cache_dir, t):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        fit(config_from_dict(t.config(tmp_path / "none", cache_dir)), resume=True)
    assert not (tmp_path / "none").exists()
