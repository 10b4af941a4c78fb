"""Fixtures of the calculator tests: small models for every backend and a few structures."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

import mlip

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is faster and immune to oversubscription on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_model(backend: str = "cg", dtype: str = "float64", l_max: int = 2, **kw) -> mlip.Potential:
    cfg = dict(elements=["H", "C", "O", "Cu"], num_channels=8, l_max=l_max, radial_mlp=[16, 16],
               tp_backend=backend, dtype=dtype)
    cfg.update(kw)
    return mlip.Potential(mlip.PotentialConfig(**cfg)).eval()


def ethanol() -> Atoms:
    atoms = ase.io.read(DATA / "ethanol_rmd17_3.xyz", index=0)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    atoms.calc = None
    return atoms


def crystal(seed: int = 0) -> Atoms:
    """Sheared, rattled periodic cell of 8 atoms with all four elements."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    strain = np.array([[0.03, 0.05, -0.02], [0.0, -0.02, 0.04], [0.06, 0.01, 0.02]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    atoms.numbers[:3] = [1, 6, 8]
    atoms.rattle(0.08, seed=seed)
    return atoms


@pytest.fixture(scope="session")
def h():
    """Helpers: ``h.model(backend, dtype, l_max, **config)``, ``h.ethanol()``, ``h.crystal()``."""
    return SimpleNamespace(model=small_model, ethanol=ethanol, crystal=crystal, data=DATA)
