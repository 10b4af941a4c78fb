"""One labelled structure in memory, as converters produce it, and its checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .units import MAX_Z


@dataclass
class Structure:
    """A labelled structure in mlip units.

    Attributes:
        positions: (N, 3) Å.
        atomic_numbers: (N,) integers 1..118.
        energy: eV (after any reference subtraction).
        forces: (N, 3) eV/Å.
        cell: (3, 3) Å, lattice vectors as rows; zeros when there is none.
        pbc: (3,) bool.
        stress: optional (3, 3) eV/Å^3, ASE sign convention.
        tags: optional (N,) small integers (OC20 0/1/2).
        fixed: optional (N,) bool, atoms held fixed in the source calculation.
        trajectory_id: id of the trajectory / system (splits never cut one).
        frame_id: step inside the trajectory.
        stage: index into the shard's ``stage_names``.
    """

    positions: np.ndarray
    atomic_numbers: np.ndarray
    energy: float
    forces: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    stress: np.ndarray | None = None
    tags: np.ndarray | None = None
    fixed: np.ndarray | None = None
    trajectory_id: int = -1
    frame_id: int = 0
    stage: int = 0

    @property
    def natoms(self) -> int:
        """Number of atoms."""
        return int(len(self.atomic_numbers))

    def optional_fields(self) -> frozenset:
        """Names of the optional fields this structure carries."""
        return frozenset(n for n in ("stress", "tags", "fixed") if getattr(self, n) is not None)


def _fail(path, where, problem):
    raise DataError(path, where, problem)


def checked_structure(
    path,
    where: str,
    *,
    positions,
    atomic_numbers,
    energy,
    forces,
    cell=None,
    pbc=None,
    stress=None,
    tags=None,
    fixed=None,
    natoms=None,
    trajectory_id: int = -1,
    frame_id: int = 0,
    stage: int = 0,
) -> Structure:
    """Build a :class:`Structure` after checking shapes, values and consistency.

    ``natoms``, when the source states it separately, must agree with the
    positions. Arrays are converted to the schema dtypes here.

    Raises:
        DataError: naming ``path`` and ``where`` and the problem (missing
            field, wrong shape, NaN/inf, atomic number out of range, natoms
            disagreeing with positions).
    """
    for name, value in (("positions", positions), ("atomic_numbers", atomic_numbers),
                        ("energy", energy), ("forces", forces)):
        if value is None:
            _fail(path, where, f"missing field: {name}")
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] == 0:
        _fail(path, where, f"bad shape: positions has shape {pos.shape}, expected (N, 3) with N > 0")
    n = pos.shape[0]
    z = np.asarray(atomic_numbers)
    if z.shape != (n,):
        _fail(path, where, f"bad shape: atomic_numbers has shape {z.shape}, expected ({n},)")
    if z.dtype.kind == "f":
        if not np.all(np.isfinite(z)) or np.any(z != np.round(z)):
            _fail(path, where, "bad value: atomic_numbers are not integers")
    z = z.astype(np.int64)
    if z.min() < 1 or z.max() > MAX_Z:
        bad = sorted(set(z[(z < 1) | (z > MAX_Z)].tolist()))
        _fail(path, where, f"bad value: atomic number out of range 1..{MAX_Z}: {bad}")
    if natoms is not None and (claimed := int(np.asarray(natoms).reshape(-1)[0])) != n:
        _fail(path, where, f"natoms mismatch: natoms={claimed} but positions has {n} rows")
    f = np.asarray(forces, dtype=np.float64)
    if f.shape != (n, 3):
        _fail(path, where, f"bad shape: forces has shape {f.shape}, expected ({n}, 3)")
    e = np.asarray(energy, dtype=np.float64)
    if e.size != 1:
        _fail(path, where, f"bad shape: energy has shape {e.shape}, expected a scalar")
    e = float(e.reshape(()))
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    if cell.size != 9:
        _fail(path, where, f"bad shape: cell has shape {cell.shape}, expected (3, 3)")
    cell = cell.reshape(3, 3)
    pbc = np.zeros(3, bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(-1)
    if pbc.shape == (1,):
        pbc = np.repeat(pbc, 3)
    if pbc.shape != (3,):
        _fail(path, where, f"bad shape: pbc has shape {pbc.shape}, expected (3,)")
    if pbc.any() and abs(np.linalg.det(cell)) < 1e-8:
        _fail(path, where, "bad value: periodic structure with a singular or missing cell")
    if stress is not None:
        stress = np.asarray(stress, dtype=np.float64)
        if stress.shape == (6,):
            xx, yy, zz, yz, xz, xy = stress
            stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        stress = stress.reshape(3, 3) if stress.size == 9 else _fail(
            path, where, f"bad shape: stress has shape {stress.shape}, expected (3, 3) or Voigt (6,)")
    for name, arr in (("positions", pos), ("forces", f), ("energy", e), ("cell", cell), ("stress", stress)):
        if arr is not None and not np.all(np.isfinite(arr)):
            _fail(path, where, f"non-finite value: {name} contains NaN or inf")
    if tags is not None:
        tags = np.asarray(tags).reshape(-1)
        if tags.shape != (n,):
            _fail(path, where, f"bad shape: tags has shape {tags.shape}, expected ({n},)")
        tags = tags.astype(np.uint8)
    if fixed is not None:
        fixed = np.asarray(fixed).reshape(-1)
        if fixed.shape != (n,):
            _fail(path, where, f"bad shape: fixed has shape {fixed.shape}, expected ({n},)")
        fixed = fixed.astype(bool)
    return Structure(
        positions=pos.astype(np.float32),
        atomic_numbers=z.astype(np.uint8),
        energy=e,
        forces=f.astype(np.float32),
        cell=cell,
        pbc=pbc,
        stress=None if stress is None else stress.astype(np.float32),
        tags=tags,
        fixed=fixed,
        trajectory_id=int(trajectory_id),
        frame_id=int(frame_id),
        stage=int(stage),
    )
