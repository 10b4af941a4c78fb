"""``mlip-train eval --diagnostics``: the HTSR alpha of every weight matrix (mlip.train.diagnostics)."""

from __future__ import annotations

import csv

import pytest

import mlip
from mlip.kernels.operators.htsr import htsr_report
from mlip.train import fit
from mlip.train.config import config_from_dict


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, cache_dir, t):
    """A 2-step run of a model with one 24x24 radial matrix (large enough for an HTSR fit)."""
    out = tmp_path_factory.mktemp("diag") / "run"
    cfg = config_from_dict(t.config(out, cache_dir, model={"radial_mlp": [24, 24]},
                                    train={"max_steps": 2, "val_every": 2}))
    return fit(cfg)


def test_eval_diagnostics_prints_htsr_table(small_run, tmp_path, cache_dir, t):
    out = tmp_path / "eval"
    p = t.cli("eval", small_run.model_path, t.ETHANOL, "--cache-dir", cache_dir, "--out", out, "--diagnostics")
    assert p.returncode == 0, p.stderr[-3000:]
    text = p.stdout
    model = mlip.load(small_run.model_path)
    ref = htsr_report(model)
    assert list(ref) == ["layers.0.interaction.radial.weights.1"]
    assert "HTSR alpha" in text
    lines = {ln.split()[0]: ln.split() for ln in text.splitlines()
             if ln.startswith(("layers.", "readouts.", "embedding"))}
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
