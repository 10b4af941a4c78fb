"""Small models for every backend and a few structures, shared by tests/mlip and
tests/calculators through the ``h`` fixture of ``tests/conftest.py`` (on pytest's pythonpath)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
from ase import Atoms
from ase.build import bulk

import mlip

DATA = Path(__file__).resolve().parent / "data"
ELEMENTS = ["H", "C", "O", "Cu"]


def small_model(backend: str = "cg", dtype: str = "float64", l_max: int = 2, **kw) -> mlip.Potential:
    """8-channel, 2-layer model in eval mode (fast enough for finite differences)."""
    cfg = dict(elements=ELEMENTS, num_channels=8, l_max=l_max, correlation=3, num_layers=2,
               radial_mlp=[16, 16], tp_backend=backend, dtype=dtype)
    cfg.update(kw)
    return mlip.Potential(mlip.PotentialConfig(**cfg)).eval()


def ethanol(frame: int = 0) -> Atoms:
    """rMD17 ethanol frame (tests/data) as a molecule: no cell, no periodicity."""
    atoms = ase.io.read(DATA / "ethanol_rmd17_3.xyz", index=frame)
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


def helpers() -> SimpleNamespace:
    """``h.model(backend, dtype, l_max, **config)``, ``h.ethanol()``, ``h.crystal()``, ``h.data``."""
    return SimpleNamespace(model=small_model, ethanol=ethanol, crystal=crystal, data=DATA)
