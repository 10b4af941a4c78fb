"""eval --diagnostics (HTSR alpha per weight matrix) and fine-tuning with OrthoReg."""

from __future__ import annotations

import csv
import math

import pytest
import torch

import mlip
from mlip.kernels.operators.htsr import htsr_report
from mlip.kernels.operators.orthoreg import orthoreg
from mlip.train import fit
from mlip.train.cli import main
from mlip.train.config import ConfigError, config_from_dict
from mlip.train.logger import read_metrics
from mlip.train.trainer import Trainer


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, cache_dir, t):
    """A 2-step run of a model with one 24x24 radial matrix (large enough for an HTSR fit)."""
    out = tmp_path_factory.mktemp("diag") / "run"
    cfg = config_from_dict(t.config(out, cache_dir, model={"radial_mlp": [24, 24]},
                                    train={"max_steps": 2, "val_every": 2}))
    return fit(cfg)


def test_eval_diagnostics_prints_htsr_table(small_run, tmp_path, capsys, cache_dir, t):
    out = tmp_path / "eval"
    assert main(["eval", str(small_run.model_path), str(t.ETHANOL), "--cache-dir", str(cache_dir),
                 "--out", str(out), "--diagnostics"]) == 0
    text = capsys.readouterr().out
    model = mlip.load(small_run.model_path)
    ref = htsr_report(model)
    assert list(ref) == ["layers.0.interaction.radial.weights.1"]
    assert "HTSR alpha" in text
    lines = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith(("layers.", "readouts.", "embedding"))}
    matrices = [n for n, p in model.named_parameters() if p.dim() >= 2]
    assert set(lines) == set(matrices)  # every weight matrix is listed
    for name, fit_ in ref.items():
        assert lines[name][1] == "24x24"
        assert float(lines[name][2]) == pytest.approx(fit_.alpha, abs=5e-4)
        assert lines[name][3] == ("yes" if fit_.heavy_tailed else "no")
    rows = list(csv.DictReader(open(out / "diagnostics.csv")))
    assert [r["layer"] for r in rows] == matrices
    for r in rows:
        if r["layer"] in ref:
            assert float(r["alpha"]) == ref[r["layer"]].alpha  # exact (repr round trip)
            assert r["heavy_tailed"] == str(ref[r["layer"]].heavy_tailed)
        else:
            assert r["alpha"] == "" and r["note"].startswith("skipped")


def _reference_model(cfg, tmp_path):
    """The exact initial model of a plain run of ``cfg``, saved: fine-tuning from it = plain training."""
    probe = config_from_dict({**__import__("dataclasses").asdict(cfg), "out": str(tmp_path / "probe")})
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


def test_orthoreg_needs_a_reference_model(tmp_path, cache_dir, t):
    with pytest.raises(ConfigError, match="finetune.orthoreg_weight"):
        config_from_dict(t.config(tmp_path, cache_dir, finetune={"orthoreg_weight": 0.5}))
    with pytest.raises(ConfigError, match="finetune.orthoreg_weight"):
        config_from_dict(t.config(tmp_path, cache_dir, finetune={"from_model": "x.pt", "orthoreg_weight": -1}))
