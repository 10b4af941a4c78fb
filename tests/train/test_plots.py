"""mlip.train.plots: matplotlib is the optional extra ``plots``, imported only to draw."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mlip.train import plots


def test_unavailable_names_the_extra(monkeypatch, tmp_path):
    assert plots.unavailable() is None  # the test environment has the extra
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert plots.unavailable() == ("matplotlib is not installed (pip install 'mlip[plots]'); no PNG plots "
                                   "will be written")
    pred = {"energy": np.zeros(2), "ref_energy": np.ones(2), "natoms": np.ones(2), "forces": np.zeros((2, 3)),
            "ref_forces": np.ones((2, 3))}
    with pytest.raises(ImportError, match=r"pip install 'mlip\[plots\]'"):
        plots.parity_plots(pred, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_importing_the_training_package_does_not_import_matplotlib(t):
    code = "import sys, mlip.train, mlip.train.cli; assert 'matplotlib' not in sys.modules"
    p = subprocess.run([t.PYTHON, "-c", code], capture_output=True, text=True, cwd=t.ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]


def _pred(n_structures=30, seed=0):
    rng = np.random.default_rng(seed)
    natoms = np.full(n_structures, 9)
    ref = -97000.0 + rng.normal(0, 0.05, n_structures)  # large absolute energies, small spread (eV)
    return {"natoms": natoms, "ref_energy": ref, "energy": ref + rng.normal(0, 0.01, n_structures),
            "ref_forces": rng.normal(0, 1, (9 * n_structures, 3)), "forces": rng.normal(0, 1, (9 * n_structures, 3))}


def test_parity_energies_relative_to_the_mean_in_mev_per_atom(tmp_path):
    pred = _pred()
    fig = plots.parity_figure(pred, "val")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "reference energy - mean (meV/atom)"
    ref = pred["ref_energy"] / 9
    assert np.allclose(ax.collections[0].get_offsets()[:, 0], 1000 * (ref - ref.mean()))
    fig.canvas.draw()
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers, no offset notation
        assert axis.get_offset_text().get_text() == ""
        assert len(axis.get_ticklabels()) <= 8
    assert f"{ref.mean():.4f} eV/atom" in ax.get_title()
    path = plots.parity_plots(pred, tmp_path / "p.png", title="val")
    assert path.stat().st_size > 1000 and not list(tmp_path.glob("*.tmp"))


def test_learning_curve_shows_the_learning_rate():
    rows = [{"step": str(s), "split": "train", "lr": str(0.01 * (1 - s / 20)), "loss": "1", "energy_mae": "2",
             "forces_mae": "3"} for s in range(1, 11)]
    fig = plots.learning_curve_figure(rows)
    assert len(fig.axes) == 4 and fig.axes[3].get_ylabel() == "learning rate"
    x, y = fig.axes[3].lines[0].get_data()
    assert list(x) == list(range(1, 11)) and np.allclose(y, [0.01 * (1 - s / 20) for s in range(1, 11)])
