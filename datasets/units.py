"""Unit constants and element lookup used by the converters.

Everything mlip writes is in eV, Å, eV/Å and eV/Å^3; source units are
converted at the edge with these constants (CODATA 2018, as in ASE).
"""

from __future__ import annotations

from ase.data import atomic_numbers as _ASE_NUMBERS
from ase.data import chemical_symbols as CHEMICAL_SYMBOLS

HARTREE_EV = 27.211386245988
"""One Hartree in eV."""

BOHR_ANGSTROM = 0.529177210903
"""One Bohr in Å."""

MAX_Z = 118
"""Largest atomic number accepted."""

_SYMBOL_TO_Z = {s: z for s, z in _ASE_NUMBERS.items() if 1 <= z <= MAX_Z and s == CHEMICAL_SYMBOLS[z]}


def symbol_to_z(symbol: str) -> int:
    """Atomic number of an element symbol (``"C"``, also ``"c"`` / ``"CL"``).

    Raises:
        KeyError: for an unknown symbol (callers wrap it in DataError).
    """
    z = _SYMBOL_TO_Z.get(symbol)
    if z is None:
        z = _SYMBOL_TO_Z.get(symbol.strip().capitalize())
    if z is None:
        raise KeyError(symbol)
    return z
