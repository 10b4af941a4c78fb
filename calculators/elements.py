"""The element check every calculator runs before anything is computed or written."""

from __future__ import annotations

import numpy as np

from mlip.errors import StructureError

__all__ = ["check_elements"]


def check_elements(numbers, elements, *, indices=None, noun: str = "atom") -> None:
    """Refuse atomic numbers that are not elements or that the model does not know.

    Args:
        numbers: ``[n]`` atomic numbers.
        elements: the model's element symbols (``Potential.elements``).
        indices: ``[n]`` indices to report for each atom (default ``0..n-1``), e.g. the
            particle indices of an OpenMM ML region.
        noun: what an atom is called in the message (``"atom"``, ``"particle"``).

    Raises:
        mlip.errors.StructureError: one line naming the unknown elements, up to ten of their
            indices and the elements the model knows.
    """
    from ase.data import chemical_symbols

    numbers = np.asarray(numbers, dtype=np.int64)
    bad = (numbers < 1) | (numbers > 118)
    if bad.any():
        raise StructureError(f"atomic_numbers: {numbers[bad][:5].tolist()} are not elements (expected 1..118)")
    known = set(elements)
    unknown = [k for k, z in enumerate(numbers) if chemical_symbols[z] not in known]
    if unknown:
        names = sorted({chemical_symbols[numbers[k]] for k in unknown})
        where = [int(indices[k]) for k in unknown] if indices is not None else unknown
        raise StructureError(f"unknown element(s) {names} at {noun}(s) {where[:10]}"
                             f"{' ...' if len(where) > 10 else ''}: this model knows {list(elements)}")
