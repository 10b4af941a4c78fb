"""Fixtures of the dataset tests: committed real data, EMT-labelled structures, shared DFT files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlip.datasets.testing import shared_data_dir

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def shared_file():
    """``shared_file("rmd17", "aspirin_train_01.xyz")``: a file of the shared DFT data folder
    (:func:`mlip.datasets.testing.shared_data_dir`); the test is skipped when it is absent."""

    def get(*parts: str) -> Path:
        root = shared_data_dir()
        if root is None:
            pytest.skip("no shared DFT data folder (set MLIP_SHARED_DATA to it)")
        path = root.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"{path} not present")
        return path

    return get


@pytest.fixture(scope="session")
def rmd17_excerpt() -> Path:
    """50 real rMD17 ethanol frames (see data/README.md)."""
    return DATA / "rmd17_ethanol_50.xyz"


@pytest.fixture(scope="session")
def co_cu_systems():
    """Three EMT relaxations of CO on Cu(111): list of (sid, frames)."""
    from mlip.datasets.testing import emt_co_on_cu

    return [(1000 + k, emt_co_on_cu(steps=6 + 2 * k, seed=k)) for k in range(3)]


@pytest.fixture(scope="session")
def bulk_cu_frames():
    """Eight rattled bulk Cu cells with EMT energy, forces and stress."""
    from mlip.datasets.testing import emt_bulk_cu

    return emt_bulk_cu(8)


@pytest.fixture(scope="session")
def rmd17_frames(rmd17_excerpt):
    """The rMD17 excerpt read with ASE, energy (``Energy``) and forces on a calculator."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = ase.io.read(rmd17_excerpt, ":")
    for a in frames:
        a.calc = SinglePointCalculator(a, energy=a.info["Energy"], forces=a.get_forces())
    return frames
