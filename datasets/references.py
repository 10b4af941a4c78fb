"""Per-element reference energies subtracted from total energies.

Two file forms are read, both giving one energy per element:

* JSON: ``{"H": -13.6, "C": -1029.8}`` in eV, or with a unit,
  ``{"unit": "hartree", "energies": {"H": -0.5, ...}}``; keys are element
  symbols or atomic numbers. Use it for isolated-atom energies (PubChemQCR).
* NPZ with a ``coeff`` array indexed by atomic number (length 100 for OC22's
  linear reference), in eV.

The reference energy of a structure is the sum over its atoms.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import DataError
from .units import HARTREE_EV, MAX_Z, symbol_to_z

_UNITS = {"ev": 1.0, "hartree": HARTREE_EV, "ha": HARTREE_EV, "kcal/mol": 0.0433641043, "kj/mol": 0.0103642688}


class ElementEnergies:
    """Energies per element, in eV, from a JSON or NPZ file.

    Attributes:
        table: float64 array (MAX_Z+1,), eV; NaN where the element is unknown.
        source: the file it was read from.
    """

    def __init__(self, table: np.ndarray, source: str):
        self.table = table
        self.source = source

    @classmethod
    def load(cls, path: str | Path) -> "ElementEnergies":
        """Read a ``.json`` or ``.npz`` reference file (see the module docstring)."""
        path = Path(path)
        table = np.full(MAX_Z + 1, np.nan)
        try:
            if path.suffix == ".npz":
                with np.load(path) as f:
                    if "coeff" not in f:
                        raise DataError(path, "", f"missing field: no 'coeff' array (has {list(f.keys())})")
                    coeff = np.asarray(f["coeff"], dtype=np.float64).ravel()
                n = min(len(coeff), MAX_Z + 1)
                table[:n] = coeff[:n]
            else:
                data = json.loads(path.read_text())
                scale = 1.0
                if "energies" in data:
                    unit = str(data.get("unit", "eV")).lower()
                    if unit not in _UNITS:
                        raise DataError(path, "unit", f"unknown unit {unit!r}; expected one of {sorted(_UNITS)}")
                    scale, data = _UNITS[unit], data["energies"]
                for key, value in data.items():
                    z = int(key) if str(key).isdigit() else symbol_to_z(str(key))
                    table[z] = float(value) * scale
        except (OSError, json.JSONDecodeError, ValueError, KeyError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(path, "", f"cannot read element energies: {exc!r}") from exc
        return cls(table, str(path))

    def energy(self, numbers: np.ndarray) -> float:
        """Reference energy (eV) of a structure with the given atomic numbers.

        Raises:
            KeyError: naming the elements that have no reference energy.
        """
        values = self.table[numbers]
        if np.isnan(values).any():
            missing = sorted({int(z) for z in np.asarray(numbers)[np.isnan(values)]})
            raise KeyError(f"no reference energy for atomic number(s) {missing} in {self.source}")
        return float(values.sum())

    def to_json(self) -> str:
        """``{"Z": energy_eV}`` for the known elements, as a JSON string."""
        return json.dumps({str(z): float(e) for z, e in enumerate(self.table) if not np.isnan(e)})
