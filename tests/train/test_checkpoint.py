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


# -- issue 18: SIGINT / SIGTERM; issue 16: a crash between last.pt and best.pt ----------------------
def _wait_for_rows(proc, csv, rows: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if csv.exists() and len(csv.read_text().splitlines()) > rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run ended or stalled before {rows} rows (rc {proc.poll()})")


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_the_current_step_then_resume_continues(sig, status, tmp_path, cache_dir, t):
    """SIGINT / SIGTERM: the step ends, a checkpoint of it is written (no periodic one exists), one line
    names the --resume command, the exit status is 128 + the signal; resuming gives the weights of an
    uninterrupted run (constant learning rate, so the state at step k does not depend on max_steps)."""
    out = tmp_path / "run"
    cfg = t.config(out, cache_dir, schedule={"kind": "constant"},
                   train={"max_steps": 5000, "checkpoint_every": 5000, "val_every": 5000, "log_every": 1})
    path = t.write(tmp_path / "c.yaml", cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([t.PYTHON, "-m", "mlip.train", "fit", str(path), "train.seed=0"], cwd=t.ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_rows(proc, out / "metrics.csv", 3)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert f"interrupted by {sig.name} after step " in lines[0]
    assert lines[0].endswith(f"continue with: mlip-train fit {path} train.seed=0 --resume")
    step = int(lines[0].split("after step ")[1].split(";")[0])
    assert step >= 3 and load_checkpoint(out / "checkpoints" / "last.pt")["step"] == step
    if sig != signal.SIGTERM:
        return
    target = step + 2
    p = t.cli("fit", path, "train.seed=0", "--resume", f"train.max_steps={target}")
    assert p.returncode == 0, p.stderr[-3000:]
    ref_out = tmp_path / "ref"
    fit(config_from_dict(dict(cfg, out=str(ref_out), train=dict(cfg["train"], max_steps=target))))
    _assert_same(t.params(out / "checkpoints" / "last.pt"), t.params(ref_out / "checkpoints" / "last.pt"))


def test_crash_between_last_and_best_then_resume_exports_the_best(tmp_path, cache_dir, t):
    """SIGKILL after last.pt is written and before best.pt is: the resumed run repairs best.pt, exports the
    weights an uninterrupted run exports, and says which; temporaries of killed writers are removed."""
    cfg = t.config(tmp_path / "ref", cache_dir, train={"max_steps": 8, "val_every": 2, "checkpoint_every": 2})
    ref = fit(config_from_dict(cfg))
    best_step = load_checkpoint(ref.out / "checkpoints" / "best.pt")["step"]
    assert ref.model_step == best_step and ref.model_weights == "best EMA weights"

    out = tmp_path / "run"
    path = t.write(tmp_path / "c.yaml", dict(cfg, out=str(out)))
    p = t.cli("fit", path, env={"MLIP_TEST_KILL_AT": f"checkpoint:after-last@{best_step}"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    ckpts = out / "checkpoints"
    assert load_checkpoint(ckpts / "last.pt")["step"] == best_step
    assert not (ckpts / "best.pt").exists() or load_checkpoint(ckpts / "best.pt")["step"] != best_step
    gone = subprocess.run([t.PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = ckpts / f"last.pt.{int(gone.stdout)}.abcdef.tmp"  # what a writer killed mid-write leaves
    stale.write_bytes(b"partial")
    p = t.cli("fit", path, "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert not stale.exists()
    assert f"model: {out / 'model.pt'} (best EMA weights, step {best_step}); run folder {out}" in p.stdout
    assert f"final metrics of {out / 'model.pt'} (best EMA weights, step {best_step})" in p.stdout
    assert "E MAE meV/atom" in p.stdout and "E MAE meV/atom" not in p.stderr  # results on stdout
    assert "training stopped at step 8 of 8: train.max_steps=8 reached" in p.stderr
    assert "tensorboard" not in p.stderr
    a, b = torch.load(out / "model.pt", weights_only=True), torch.load(ref.model_path, weights_only=True)
    _assert_same(a["state_dict"], b["state_dict"])
    assert a["metadata"]["extra"]["step"] == best_step
