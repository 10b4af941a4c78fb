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
