"""A whole (tiny) run: outputs, final metrics, E0 fit, deployment, fine-tuning, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import ase.io
import numpy as np
import pytest
import torch

import mlip
from mlip.kernels.operators.orthoreg import orthoreg
from mlip.kernels.tp import BACKENDS, CGBackend, register_backend
from mlip.train import ConfigError, DataError, OutputExistsError, fit, load_checkpoint
from mlip.train.config import config_from_dict
from mlip.train.data import fit_e0s, resolve_dataset, scan
from mlip.train.logger import read_metrics
from mlip.train.trainer import Trainer

ETHANOL = __import__("pathlib").Path(__file__).resolve().parents[1] / "datasets" / "data" / "rmd17_ethanol_50.xyz"


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_run_folder_has_every_output(finished_run):
    run = finished_run
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


def test_model_file_deploys_with_ase(finished_run):
    from ase.io import read

    from mlip.calculators import MLIPCalculator

    model = mlip.load(finished_run.out / "model.pt")
    assert model.elements == ["H", "C", "O"]
    atoms = read(ETHANOL, index=0)
    atoms.pbc = False
    atoms.calc = MLIPCalculator(finished_run.out / "model.pt")
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().shape == (9, 3)


def test_e0s_are_the_least_squares_fit(finished_run, cache_dir):
    paths = resolve_dataset([str(ETHANOL)], cache_dir=cache_dir)
    stats = scan(paths, "train")
    assert stats.n_structures == 45 and stats.symbols == ["H", "C", "O"]
    e0 = fit_e0s(stats, ["H", "C", "O"])
    # C2H6O only: one composition, so the fit reproduces the mean energy (minimum-norm solution)
    mean_energy = stats.xty[1] / 6 / stats.n_structures
    assert 6 * e0["H"] + 2 * e0["C"] + e0["O"] == pytest.approx(mean_energy, rel=1e-12)
    assert np.allclose([e0["H"] / 6, e0["C"] / 2, e0["O"]], e0["O"], rtol=1e-9)  # proportional to the counts
    model = mlip.load(finished_run.out / "model.pt")
    assert model.e0s() == pytest.approx(e0)


def test_model_section_fields_reach_the_model(finished_run, tmp_path, cache_dir, t):
    """The ``model`` section is the model's PotentialConfig: fields the old hand copy dropped
    (cutoff_p, energy_scale, energy_shift) arrive; the from-data fields are filled in."""
    trained = mlip.load(finished_run.out / "model.pt").config
    assert trained.unresolved() == [] and trained.avg_num_neighbors > 0
    cfg = config_from_dict(t.config(tmp_path / "r", cache_dir, model={"cutoff_p": 6, "energy_scale": 2.0,
                                                                       "energy_shift": -0.5}))
    mc = Trainer(cfg).model.config
    assert (mc.cutoff_p, mc.energy_scale, mc.energy_shift) == (6, 2.0, -0.5)
    assert mc.elements == ["H", "C", "O"] and mc.e0s == pytest.approx(trained.e0s)


def test_registered_backend_trains(tmp_path, cache_dir, t):
    """A backend added with register_backend is accepted by the training config and trains."""

    class CopyOfCG(CGBackend):
        name = "cg_copy_for_test"

    register_backend(CopyOfCG)
    try:
        cfg = config_from_dict(t.config(tmp_path / "r", cache_dir, model={"tp_backend": CopyOfCG.name},
                                        train={"max_steps": 1, "val_every": 1}))
        res = fit(cfg)
        assert res.step == 1
        model = mlip.load(res.model_path)
        assert model.config.tp_backend == CopyOfCG.name
        assert math.isfinite(res.metrics["val"]["forces_mae"])
    finally:
        BACKENDS.pop(CopyOfCG.name)
    with pytest.raises(ConfigError, match="model.tp_backend"):
        config_from_dict(t.config(tmp_path / "q", cache_dir, model={"tp_backend": CopyOfCG.name}))


def test_without_matplotlib_one_line_and_no_plots(tmp_path, cache_dir, t, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    cfg = config_from_dict(t.config(tmp_path / "r", cache_dir, train={"max_steps": 2, "val_every": 2,
                                                                       "plots": True}))
    res = fit(cfg)
    err = capsys.readouterr().err
    note = ("train.plots: matplotlib is not installed (pip install 'mlip[plots]'); no PNG plots will be "
            "written")
    assert [ln for ln in err.splitlines() if "mlip[plots]" in ln] == [note]
    assert err.lstrip().startswith(note)  # said at the start, before training
    assert res.step == 2 and res.model_path.is_file() and (res.out / "metrics.json").is_file()
    assert len(read_metrics(res.out / "metrics.csv")) == 2  # one train row, one val row
    assert not list(res.out.glob("*.png"))


def test_loss_goes_down(tmp_path, cache_dir, t, device):
    cfg = config_from_dict(t.config(tmp_path / "r", cache_dir, train={"max_steps": 30, "val_every": 30,
                                                                          "log_every": 5, "device": device.type},
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
    assert res.stop_reason.startswith("time budget train.max_minutes=0.002 reached")
    with pytest.raises(ConfigError, match=r"train\.clock.*'wall'.*'cpu'"):
        config_from_dict(t.config(tmp_path / "q", cache_dir, train={"clock": "gpu"}))


# -- bad input: a clear ValueError (or subclass), nothing overwritten ----------------------------
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
    with pytest.raises(DataError, match=r"element\(s\) \['N'\] absent from the training data") as err:
        fit(config_from_dict(cfg))
    assert err.value.path.endswith(".h5") and err.value.where == "validation split None"  # names the file
    assert not out.exists()


def test_existing_run_is_not_overwritten(short_run, tmp_path):
    import shutil

    src, cfg = short_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    before = _snapshot(out)
    with pytest.raises(OutputExistsError, match="--resume"):
        fit(config_from_dict(dict(cfg, out=str(out))))
    assert _snapshot(out) == before


# -- fine-tuning with OrthoReg ----------------------------------------------------------------
def _reference_model(cfg, tmp_path):
    """The exact initial model of a plain run of ``cfg``, saved: fine-tuning from it = plain training."""
    probe = config_from_dict({**dataclasses.asdict(cfg), "out": str(tmp_path / "probe")})
    model = Trainer(probe).model
    return mlip.save(model, tmp_path / "ref.pt")


def test_orthoreg_finetuning(tmp_path, cache_dir, t):
    base = t.config(tmp_path / "plain", cache_dir, train={"max_steps": 3, "log_every": 1, "val_every": 3})
    plain = fit(config_from_dict(base))
    ref_path = _reference_model(config_from_dict(base), tmp_path)

    def finetune(name, weight):
        cfg = t.config(tmp_path / name, cache_dir, train={"max_steps": 3, "log_every": 1, "val_every": 3},
                       finetune={"from_model": str(ref_path), "orthoreg_weight": weight})
        return fit(config_from_dict(cfg))

    zero, reg = finetune("w0", 0.0), finetune("w1", 1.0)
    p_plain = t.params(plain.out / "checkpoints" / "last.pt")
    p_zero = t.params(zero.out / "checkpoints" / "last.pt")
    p_reg = t.params(reg.out / "checkpoints" / "last.pt")
    # weight 0 from the plain run's initial weights: bit for bit the plain run
    assert all(torch.equal(p_plain[k], p_zero[k]) for k in p_plain)
    # weight > 0 changes the trajectory
    assert any(not torch.equal(p_zero[k], p_reg[k]) for k in p_zero if k.startswith("model."))

    rows0 = [r for r in read_metrics(zero.out / "metrics.csv") if r["split"] == "train"]
    rows1 = [r for r in read_metrics(reg.out / "metrics.csv") if r["split"] == "train"]
    assert all(r["orthoreg"] == "" for r in rows0)
    # At the start dW = 0, so R = sum_W ||0 - I||_F = sum_W sqrt(min(rows, cols)), not 0;
    # its gradient is 0 there, so the first step equals the unregularised one.
    ref = mlip.load(ref_path)
    expected = sum(math.sqrt(min(p.reshape(p.shape[0], -1).shape)) for p in ref.parameters() if p.dim() >= 2)
    assert float(orthoreg(ref, ref).detach()) == pytest.approx(expected)
    assert float(rows1[0]["orthoreg"]) == pytest.approx(expected, rel=1e-6)
    assert float(rows1[0]["loss"]) == pytest.approx(float(rows0[0]["loss"]) + expected, rel=1e-6)
    assert float(rows1[0]["forces_mae"]) == pytest.approx(float(rows0[0]["forces_mae"]), rel=1e-9)
    assert float(rows1[1]["orthoreg"]) != pytest.approx(expected, rel=1e-9)  # dW != 0 from step 2 on


def test_time_budget_drives_the_cosine_and_resume_keeps_it(tmp_path, cache_dir, t, capsys):
    """With max_minutes, the cosine spans the time budget (not the unreachable max_steps): the rate has
    decayed to min_lr_factor * lr when the time is spent; the run says why it stopped; a resumed run
    starts from the learning rate the checkpoint's step ended with."""
    base = dict(train={"max_steps": 10**6, "max_minutes": 0.01, "val_every": 10**5, "log_every": 1,
                       "checkpoint_every": 10**5}, schedule={"kind": "cosine", "warmup_steps": 0,
                                                             "min_lr_factor": 0.01})
    res = fit(config_from_dict(t.config(tmp_path / "r", cache_dir, **base)))
    assert f"training stopped at step {res.step} of 1000000: time budget train.max_minutes=0.01 reached" in (
        capsys.readouterr().err)
    rows = [r for r in read_metrics(tmp_path / "r" / "metrics.csv") if r["split"] == "train"]
    lrs = [float(r["lr"]) for r in rows]
    assert len(lrs) >= 3 and lrs == sorted(lrs, reverse=True) and lrs[0] > lrs[-1]
    ck = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ck["schedule"]["time_fraction"] >= 1.0
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * 0.01)  # min_lr_factor * lr
    # a run stopped between, resumed with more time: the next step uses the checkpoint's rate
    cfg = t.config(tmp_path / "s", cache_dir, **base)
    fit(config_from_dict(cfg), stop_at_step=3)
    ck = load_checkpoint(tmp_path / "s" / "checkpoints" / "last.pt")
    assert 0 < ck["schedule"]["time_fraction"] < 1
    cfg["train"] = dict(cfg["train"], max_minutes=5.0)
    trainer = Trainer(config_from_dict(cfg), resume=True)
    assert trainer.optimizer.param_groups[0]["lr"] == ck["optimizer"]["param_groups"][0]["lr"] < 0.01


def _with_isolated_atoms(tmp_path, t, energies):
    frames = ase.io.read(t.ETHANOL, ":20")
    for sym, e in energies.items():
        atom = ase.Atoms(sym, positions=[[0.0, 0.0, 0.0]])
        atom.info = {"Energy": e, "config_type": "IsolatedAtom"}
        atom.arrays["forces"] = np.zeros((1, 3))
        frames.append(atom)
    path = tmp_path / "with_isolated.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def test_e0s_choices(tmp_path, cache_dir, t):
    """model.e0s: isolated (the one-atom frames, MACE's IsolatedAtom), average (one e per atom for
    every element), least_squares (= null), a mapping; a missing isolated atom is named."""
    energies = {"H": -13.6, "C": -1029.5, "O": -2041.25}
    data = _with_isolated_atoms(tmp_path, t, energies)

    def e0s_of(choice, train=data):
        cfg = t.config(tmp_path / "r", tmp_path / "cache", data={"train": [str(train)]}, model={"e0s": choice})
        return Trainer(config_from_dict(cfg)).model.config.e0s

    assert e0s_of("isolated") == pytest.approx(energies, abs=1e-9)
    stats = scan(resolve_dataset([str(data)], cache_dir=tmp_path / "cache"), "train")
    zs = [1, 6, 8]
    e = stats.xty[zs].sum() / stats.xtx[np.ix_(zs, zs)].sum()
    assert e0s_of("average") == pytest.approx(dict.fromkeys(["H", "C", "O"], e), rel=1e-12)
    assert e0s_of("least_squares") == pytest.approx(e0s_of(None), rel=1e-12)
    assert e0s_of("least_squares") == pytest.approx(fit_e0s(stats, ["H", "C", "O"]), rel=1e-12)
    assert e0s_of({"H": 1.0, "C": 2.0, "O": 3.0}) == {"H": 1.0, "C": 2.0, "O": 3.0}
    (tmp_path / "p").mkdir()
    partial = _with_isolated_atoms(tmp_path / "p", t, {"H": -13.6})
    with pytest.raises(ConfigError, match=r"model\.e0s: 'isolated'.*\['C', 'O'\]"):
        e0s_of("isolated", partial)
    with pytest.raises(ConfigError, match=r"model\.e0s: expected null, one of 'least_squares', 'isolated'"):
        config_from_dict(t.config(tmp_path / "q", cache_dir, model={"e0s": "isolatd"}))
