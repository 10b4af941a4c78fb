"""Checks any potential should pass, in the library so that every model and test can use them.

``predict(model, atoms)`` returns a model's energy, per-atom energies, forces (and stress) for
one structure as numpy arrays. ``symmetry_errors(model, atoms)`` applies a random rotation, a
random rotation-inversion, a translation and a permutation of the atoms and reports how far
energy, per-atom energies, forces (and stress, for 3D periodic cells) are from the transformed
originals.
"""

from __future__ import annotations

import numpy as np
import torch

from mlip.kernels.testing import random_orthogonal

from .graph import atoms_to_graph

__all__ = ["predict", "symmetry_errors", "max_abs"]


def predict(model, atoms, *, stress: bool | None = None) -> dict[str, np.ndarray]:
    """The model's predictions for one ``ase.Atoms`` as float64 numpy arrays: energy ``[1]``,
    energies ``[N]``, forces ``[N, 3]`` (and stress ``[1, 3, 3]`` when ``stress``, default: the
    cell is 3D periodic)."""
    if stress is None:
        stress = bool(atoms.pbc.all())
    out = model(atoms_to_graph(atoms, model.r_max), forces=True, stress=stress, create_graph=False)
    return {k: v.detach().cpu().double().numpy() for k, v in out.items()}


def symmetry_errors(model, atoms, *, seed: int = 0) -> dict[str, float]:
    """Largest absolute deviations under symmetry operations.

    Returns a dict ``{"<op>/<quantity>": error}`` for op in ``rotation``, ``improper``
    (rotation times inversion), ``translation``, ``permutation`` and quantity in
    ``energy`` (eV), ``energies`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å^3, periodic
    cells only). The cell is transformed with the positions.
    """
    ref = predict(model, atoms)
    rng = np.random.default_rng(seed)
    errors: dict[str, float] = {}

    def compare(op, out, perm=None, Q=None):
        idx = np.arange(len(atoms)) if perm is None else perm
        f_ref = ref["forces"][idx]
        if Q is not None:
            f_ref = f_ref @ Q.T
        errors[f"{op}/energy"] = float(np.abs(out["energy"] - ref["energy"]).max())
        errors[f"{op}/energies"] = float(np.abs(out["energies"] - ref["energies"][idx]).max())
        errors[f"{op}/forces"] = float(np.abs(out["forces"] - f_ref).max())
        if "stress" in ref:
            s_ref = ref["stress"][0] if Q is None else Q @ ref["stress"][0] @ Q.T
            errors[f"{op}/stress"] = float(np.abs(out["stress"][0] - s_ref).max())

    for op, improper in (("rotation", False), ("improper", True)):
        Q = random_orthogonal(seed + int(improper), improper=improper)
        moved = atoms.copy()
        moved.positions = atoms.positions @ Q.T
        moved.cell = atoms.cell.array @ Q.T
        compare(op, predict(model, moved), Q=Q)
    moved = atoms.copy()
    moved.positions = atoms.positions + rng.normal(scale=3.0, size=3)
    compare("translation", predict(model, moved))
    perm = rng.permutation(len(atoms))
    compare("permutation", predict(model, atoms[perm]), perm=perm)
    return errors


def max_abs(x) -> float:
    """Largest absolute value of an array or tensor (helper for tolerances)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return float(np.abs(np.asarray(x)).max())
