"""A whole (tiny) run: outputs, final metrics, E0 fit, eval and export commands, deployment."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mlip
from mlip.train import ConfigError, export_checkpoint, fit, load_checkpoint, model_from_checkpoint
from mlip.train.cli import main
from mlip.train.config import config_from_dict
from mlip.train.data import fit_e0s, resolve_dataset, scan

ETHANOL = __import__("pathlib").Path(__file__).resolve().parents[1] / "datasets" / "data" / "rmd17_ethanol_50.xyz"


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir, t):
    """One finished 6-step run with plots, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("fit") / "run"
    cfg = config_from_dict(t.config(out, cache_dir, train={"plots": True, "progress": True}))
    return fit(cfg)


def test_run_folder_has_every_output(run):
    out = run.out
    for name in ("config.yaml", "metrics.csv", "metrics.json", "model.pt", "checkpoints/last.pt",
                 "checkpoints/best.pt", "learning_curve.png", "parity_val.png", "parity_train.png"):
        assert (out / name).is_file(), name
    assert run.step == 6
    assert not list(out.rglob("*.tmp"))
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,elapsed_s,split,lr,loss,energy_mae")
    assert sum(",val," in r for r in rows) == 2 and sum(",train," in r for r in rows) == 3
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"train", "val"}
    for key in ("energy_mae", "forces_mae", "forces_cos", "efwt", "energy_rmse"):
        assert np.isfinite(m["val"][key])
    assert m["val"]["structures"] == 5 and m["train"]["structures"] == 45


def test_checkpoint_contents(run):
    ck = load_checkpoint(run.out / "checkpoints" / "last.pt")
    assert ck["step"] == 6
    assert {"model", "optimizer", "schedule", "ema", "rng", "data", "best"} <= set(ck)
    assert ck["data"] == [{"epoch": 0, "batch": 6}]  # 45 train frames, batch 4: 11 batches per epoch
    assert ck["schedule"]["step_count"] == 6


def test_model_file_deploys_with_ase(run):
    from ase.io import read

    from mlip.calculators import MLIPCalculator

    model = mlip.load(run.out / "model.pt")
    assert model.elements == ["H", "C", "O"]
    atoms = read(ETHANOL, index=0)
    atoms.pbc = False
    atoms.calc = MLIPCalculator(run.out / "model.pt")
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().shape == (9, 3)


def test_e0s_are_the_least_squares_fit(run, cache_dir):
    paths = resolve_dataset([str(ETHANOL)], cache_dir=cache_dir)
    stats = scan(paths, "train")
    assert stats.n_structures == 45 and stats.symbols == ["H", "C", "O"]
    e0 = fit_e0s(stats, ["H", "C", "O"])
    # C2H6O only: one composition, so the fit reproduces the mean energy (minimum-norm solution)
    mean_energy = stats.xty[1] / 6 / stats.n_structures
    assert 6 * e0["H"] + 2 * e0["C"] + e0["O"] == pytest.approx(mean_energy, rel=1e-12)
    assert np.allclose([e0["H"] / 6, e0["C"] / 2, e0["O"]], e0["O"], rtol=1e-9)  # proportional to the counts
    model = mlip.load(run.out / "model.pt")
    assert model.e0s() == pytest.approx(e0)


def test_export_and_eval_commands(run, tmp_path, capsys, cache_dir):
    out = tmp_path / "exported.pt"
    assert main(["export", str(run.out / "checkpoints" / "last.pt"), "-o", str(out)]) == 0
    a, b = mlip.load(out), model_from_checkpoint(run.out / "checkpoints" / "last.pt")
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    raw = export_checkpoint(run.out / "checkpoints" / "last.pt", tmp_path / "raw.pt", weights="raw")
    ck = load_checkpoint(run.out / "checkpoints" / "last.pt")
    assert torch.equal(mlip.load(raw).state_dict()["embedding"], ck["model"]["embedding"])
    capsys.readouterr()
    assert main(["eval", str(out), str(ETHANOL), "--split", "val", "--out", str(tmp_path / "ev"),
                 "--cache-dir", str(cache_dir)]) == 0
    text = capsys.readouterr().out
    assert "E MAE meV/atom" in text and "F MAE meV/Å" in text and "EFwT" in text
    assert (tmp_path / "ev" / "parity_val.png").is_file()
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["val"]
    assert m["structures"] == 5
    # a checkpoint is accepted by eval too
    assert main(["eval", str(run.out / "checkpoints" / "last.pt"), str(ETHANOL), "--cache-dir", str(cache_dir)]) == 0


def test_help_of_every_subcommand(capsys):
    for cmd in ("fit", "eval", "export", "demo"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--resume" in text and "key=value" in text and "--weights" in text and "--md-steps" in text


def test_loss_goes_down(tmp_path, cache_dir, t):
    cfg = config_from_dict(t.config(tmp_path / "r", cache_dir, train={"max_steps": 30, "val_every": 30,
                                                                          "log_every": 5},
                                       optim={"ema_decay": None}))
    fit(cfg)
    rows = [r.split(",") for r in (tmp_path / "r" / "metrics.csv").read_text().splitlines()[1:]]
    train_loss = [float(r[5]) for r in rows if r[3] == "train"]
    assert train_loss[-1] < train_loss[0]


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_time_budget_stops_with_a_checkpoint(tmp_path, cache_dir, t, clock):
    """max_minutes ends the run early on either clock; the checkpoint records the time spent."""
    cfg = config_from_dict(t.config(tmp_path / "r", cache_dir, train={"max_steps": 10**6, "max_minutes": 0.002,
                                                                          "clock": clock, "val_every": 1000}))
    res = fit(cfg)
    assert 1 <= res.step < 10**6
    ck = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ck["step"] == res.step and ck["elapsed_s"] >= 0.12
    with pytest.raises(ConfigError, match=r"train\.clock.*'wall'.*'cpu'"):
        config_from_dict(t.config(tmp_path / "q", cache_dir, train={"clock": "gpu"}))
