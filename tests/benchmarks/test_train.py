"""``benchmarks/train.py``: the labelled frames it reads and ``--step-times``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
EXCERPT = Path(__file__).resolve().parents[2] / "mlip" / "train" / "data" / "ethanol_rmd17_200.xyz"


@pytest.fixture
def train(benchmark_script):
    return benchmark_script("train")


def test_read_labelled_takes_rmd17_energy_and_forces(train):
    """rMD17 keeps the energy as ``Energy`` and the forces in a calculator: both end up in
    info/arrays, with no cell and no calculator left."""
    import ase.io

    raw = ase.io.read(EXCERPT, ":3")
    frames = train.read_labelled(EXCERPT, ":3")
    assert len(frames) == 3
    for a, r in zip(frames, raw):
        assert a.info == {"energy": float(r.info["Energy"])} and a.calc is None and not a.pbc.any()
        np.testing.assert_array_equal(a.arrays["forces"], r.calc.results["forces"])


def test_step_times_times_every_backend(train, capsys, monkeypatch):
    """``--step-times`` trains nothing and writes nothing: one step time per backend."""
    import mlip.allocator

    monkeypatch.setattr(mlip.allocator, "tune_cpu_allocator", lambda: None)  # leave this process's malloc alone
    assert train.main(["--data", str(EXCERPT), "--backends", "cg", "grid", "--channels", "4", "--l-max", "1",
                       "--correlation", "2", "--layers", "1", "--batch-size", "2", "--step-times",
                       "--work", "no-such-dir", "--no-mace"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "ms per training step" in line]
    assert [line.split(":")[0].split()[1] for line in lines] == ["cg", "grid"]
    assert all(float(line.split(":")[1].split()[0]) > 0 for line in lines)
    assert not Path("no-such-dir").exists()
