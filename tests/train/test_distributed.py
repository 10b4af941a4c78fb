"""Two processes (torchrun, gloo, localhost) train exactly like one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from mlip.train import fit, load_checkpoint
from mlip.train.config import config_from_dict


def test_two_process_gloo_equals_single_process(tmp_path, cache_dir, t):
    # every structure trains (no split), no shuffling, blocks of one structure: rank r takes
    # structures r, r+2, ... so each global batch of 8 is the single process's batch of 8
    sections = dict(
        data={"train_split": None, "val": [str(t.ETHANOL)], "val_split": None, "shuffle": False, "block_size": 1},
        train={"max_steps": 8, "batch_size": 8, "val_every": 4, "checkpoint_every": 4, "val_batch_size": 8},
        optim={"ema_decay": 0.9, "clip_grad_norm": 1.0},
    )
    single = tmp_path / "single"
    fit(config_from_dict(t.config(single, cache_dir, **sections)))
    multi = tmp_path / "multi"
    path = t.write(tmp_path / "c.yaml", t.config(multi, cache_dir, **sections))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([t.PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "mlip.train", "fit", str(path)], cwd=t.ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    a, b = t.params(single / "checkpoints" / "last.pt"), t.params(multi / "checkpoints" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-10, atol=1e-12, msg=k)
    ck = load_checkpoint(multi / "checkpoints" / "last.pt")
    assert len(ck["data"]) == 2  # both ranks' stream positions
    # validation metrics reduced over ranks equal the single-process ones
    ma = json.loads((single / "metrics.json").read_text())
    mb = json.loads((multi / "metrics.json").read_text())
    assert mb["val"]["structures"] == ma["val"]["structures"] == 50
    single_metrics = load_checkpoint(single / "checkpoints" / "last.pt")["metrics"]
    assert ck["metrics"]["energy_mae"] == pytest.approx(single_metrics["energy_mae"], rel=1e-9)
    # only rank 0 wrote: one metrics file, no stray files
    assert not list(multi.rglob("*.tmp"))
