"""The sample contract: the keys of every ``Data`` the datasets yield.

This is the one place the names, shapes, dtypes and units of a sample are
written down. ``N`` is the number of atoms of the structure. Per-structure
values have a leading axis of length 1 so that torch-geometric batching
concatenates them into ``(B, ...)``.

Optional keys are present only when the shard stores them (``stress``,
``tags``, ``fixed``). Names avoid the substring ``index``: torch-geometric
would shift such keys by the node count when batching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

POS = "pos"
ATOMIC_NUMBERS = "atomic_numbers"
FORCES = "forces"
ENERGY = "energy"
CELL = "cell"
PBC = "pbc"
NATOMS = "natoms"
STRESS = "stress"
TAGS = "tags"
FIXED = "fixed"
TRAJECTORY_ID = "trajectory_id"
FRAME_ID = "frame_id"
STAGE = "stage"
STRUCTURE_ID = "structure_id"


@dataclass(frozen=True)
class Key:
    """One entry of the sample contract.

    Attributes:
        name: attribute name on the ``Data`` object.
        shape: symbolic shape, ``N`` = atoms of the structure.
        dtype: torch dtype.
        unit: physical unit, ``""`` if none.
        optional: present only if stored in the shard.
        doc: meaning.
    """

    name: str
    shape: tuple
    dtype: torch.dtype
    unit: str
    optional: bool
    doc: str


SAMPLE_KEYS: dict[str, Key] = {k.name: k for k in (
    Key(POS, ("N", 3), torch.float32, "Å", False, "Cartesian positions"),
    Key(ATOMIC_NUMBERS, ("N",), torch.int64, "", False, "atomic numbers Z"),
    Key(FORCES, ("N", 3), torch.float32, "eV/Å", False, "forces, -dE/dpos"),
    Key(ENERGY, (1,), torch.float64, "eV", False, "energy after the reference in attr energy_reference"),
    Key(CELL, (1, 3, 3), torch.float64, "Å", False, "lattice vectors as rows (zeros when none)"),
    Key(PBC, (1, 3), torch.bool, "", False, "periodic along each lattice vector"),
    Key(NATOMS, (1,), torch.int64, "", False, "number of atoms N"),
    Key(STRESS, (1, 3, 3), torch.float32, "eV/Å^3", True, "stress, ASE sign convention"),
    Key(TAGS, ("N",), torch.int64, "", True, "OC20 tags: 0 sub-surface, 1 surface, 2 adsorbate"),
    Key(FIXED, ("N",), torch.bool, "", True, "atom held fixed in the source calculation"),
    Key(TRAJECTORY_ID, (1,), torch.int64, "", False, "trajectory / system id (PubChem CID, OC20 sid)"),
    Key(FRAME_ID, (1,), torch.int64, "", False, "frame inside the trajectory"),
    Key(STAGE, (1,), torch.int64, "", False, "index into the shard's stage_names"),
    Key(STRUCTURE_ID, (1,), torch.int64, "", False, "position of the structure in the dataset (shard order)"),
)}


def check_sample(data) -> None:
    """Assert that ``data`` (a torch-geometric ``Data``) meets the contract.

    Raises:
        ValueError: naming the first key that is missing or has the wrong
            shape or dtype.
    """
    n = data[POS].shape[0]
    for key in SAMPLE_KEYS.values():
        if key.name not in data:
            if key.optional:
                continue
            raise ValueError(f"sample lacks key {key.name!r}")
        value = data[key.name]
        want = tuple(n if d == "N" else d for d in key.shape)
        if tuple(value.shape) != want or value.dtype != key.dtype:
            raise ValueError(f"sample key {key.name!r}: shape {tuple(value.shape)} dtype {value.dtype}, "
                             f"expected {want} {key.dtype}")
