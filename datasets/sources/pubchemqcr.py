"""PubChemQCR relaxation trajectories from LMDB files.

Layout: key = 9-digit PubChem CID as ASCII bytes (``b'000000702'``); value =
``gzip.compress(pickle.dumps(d))`` with ``d`` a dict of stages ``pm3``,
``hf``, ``DFT_1st``, ``DFT_2nd`` (any may be ``None``), each a list of steps::

    {"coordinates": [{"atom": "C", "charge": 6, "x": .., "y": .., "z": ..}, ...],  # Å
     "energy": -154.9,                                                           # Hartree
     "gradient": [{"atom": "C", "charge": 6, "dx": .., "dy": .., "dz": ..}, ...]}  # Hartree/Bohr

SMASH steps have no ``charge`` key (not needed here). Converted: energy x
27.211386245988 eV, forces = -gradient x 27.211386245988 / 0.529177210903
eV/Å; trajectory id = CID, frame id = step index within its stage, stage code
= index in ``pm3, hf, DFT_1st, DFT_2nd``. With ``stage="all"`` every stage is
kept, so the geometry shared by the end of one stage and the start of the
next appears twice (with each stage's own labels).

Incomplete steps: the real data hold steps whose energy or gradient is
missing (``None``, or the whole step ``None``) or non-finite, or whose atom
count differs from the trajectory's (the most common count over the record's
steps; a gradient with another atom count than the coordinates counts too).
The reference loader skips them, and so does this reader: each is counted by
reason (``incomplete step (missing gradient)`` ...) in the skip report that
``convert`` prints and stores in the shard. With the ``strict`` option such a
step is a bad record (the run stops unless ``skip_bad``). Corrupt records
(undecodable values, refused pickles, unknown elements) are bad records always.
Element ``charge`` entries (int, float or absent in SMASH steps) are not read.

Values are unpickled with the restricted unpickler of :mod:`.safe_pickle`.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError
from ..structure import checked_structure
from ..units import BOHR_ANGSTROM, HARTREE_EV, symbol_to_z
from .base import Source, Unit
from .lmdb_files import iter_lmdb
from .safe_pickle import DecompressionLimitError, gunzip_bounded, safe_loads

STAGES = ("pm3", "hf", "DFT_1st", "DFT_2nd")
LEVELS = {"pm3": "PM3", "hf": "HF/STO-3G", "DFT_1st": "B3LYP/6-31G*", "DFT_2nd": "B3LYP/6-31G*"}
_FORCE = HARTREE_EV / BOHR_ANGSTROM


class PubChemQCRSource(Source):
    """Reader for PubChemQCR ``*.lmdb`` files (module docstring for the layout)."""

    format = "pubchemqcr"
    patterns = ("*.lmdb",)

    def __init__(self, paths, options=None):
        super().__init__(paths, options)
        stage = self.options.stage
        if stage != "all" and stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES + ('all',)}; got {stage!r}")
        self.stages = STAGES if stage == "all" else (stage,)

    @property
    def level_of_theory(self) -> str:  # type: ignore[override]
        return "; ".join(f"{s}: {LEVELS[s]}" for s in self.stages)

    def stage_names(self) -> list[str]:
        return list(STAGES)

    def energy_reference(self) -> str:
        return super().energy_reference() + " (source energies in Hartree, converted to eV)"

    def iter_file(self, index: int, path: Path, state: dict | None) -> Iterator[Unit]:
        try:
            for n, key, value in iter_lmdb(path, state):
                unit = Unit({"file": index, "n": n, "key": key.hex()})
                self._read_record(path, key, value, unit)
                yield unit
        except DataError as err:
            yield Unit({"file": index + 1, "n": 0}, errors=[err])

    def _read_record(self, path: Path, key: bytes, value: bytes, unit: Unit) -> None:
        where = f"key {key!r}"
        try:
            if len(key) != 9 or not key.isdigit():
                raise DataError(path, where, "bad key: expected a 9-digit PubChem CID")
            try:
                record = safe_loads(gunzip_bounded(value))
            except DecompressionLimitError as exc:
                raise DataError(path, where, f"too large: {exc}") from exc
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(path, where, f"corrupt value: not gzip data ({exc})") from exc
            except Exception as exc:  # UnpicklingError and whatever a broken pickle raises
                raise DataError(path, where, f"corrupt value: cannot unpickle ({exc!r})") from exc
            if not isinstance(record, dict):
                raise DataError(path, where, f"bad record: expected a dict of stages, got {type(record).__name__}")
        except DataError as err:
            unit.errors.append(err)
            return
        cid = int(key)
        natoms = _trajectory_natoms(record)
        for stage in self.stages:
            steps = record.get(stage)
            if steps is None:
                continue
            code = STAGES.index(stage)
            for i, step in enumerate(steps):
                w = f"{where} stage {stage} step {i}"
                reason = _incomplete(step, natoms)
                if reason is not None and not self.options.strict:
                    unit.skipped.append(DataError(path, w, f"incomplete step ({reason[0]}): {reason[1]}; skipped, as "
                                                           "the reference loader does (--strict stops instead)"))
                    continue
                try:
                    if reason is not None and reason[1].startswith("step has"):
                        raise DataError(path, w, f"bad shape: {reason[1]}")
                    s = self._step(path, w, step, cid, i, code)
                    unit.structures.append(self.subtract_element_energies(path, w, s))
                except DataError as err:
                    unit.errors.append(err)

    @staticmethod
    def _step(path, where, step, cid, frame, stage):
        if not isinstance(step, dict):
            raise DataError(path, where, f"bad record: step is {type(step).__name__}, expected dict")
        for name in ("coordinates", "energy", "gradient"):
            if step.get(name) is None:
                raise DataError(path, where, f"missing field: {name}")
        coords, grad = step["coordinates"], step["gradient"]
        try:
            symbols = [c["atom"] for c in coords]
            pos = np.array([[c["x"], c["y"], c["z"]] for c in coords], dtype=np.float64)
            g = np.array([[a["dx"], a["dy"], a["dz"]] for a in grad], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(path, where, f"missing field: coordinate/gradient entry lacks {exc}") from None
        try:
            z = np.array([symbol_to_z(str(s)) for s in symbols], dtype=np.int64)
        except KeyError as exc:
            raise DataError(path, where, f"unknown element symbol {exc.args[0]!r}") from None
        if len(grad) != len(coords):
            raise DataError(path, where, f"bad shape: gradient has {len(grad)} atoms, coordinates {len(coords)}")
        if any(str(a.get("atom", s)) != str(s) for a, s in zip(grad, symbols)):
            raise DataError(path, where, "atom mismatch: gradient atoms differ from coordinate atoms")
        try:
            energy = float(step["energy"]) * HARTREE_EV
        except (TypeError, ValueError):
            raise DataError(path, where, f"bad value: energy {step['energy']!r} is not a number") from None
        return checked_structure(
            path, where, positions=pos, atomic_numbers=z, energy=energy,
            forces=-g * _FORCE, trajectory_id=cid, frame_id=frame, stage=stage)


def _trajectory_natoms(record: dict) -> int | None:
    """The most common atom count over the steps of a record (all stages), or None."""
    counts: Counter = Counter()
    for steps in record.values():
        if isinstance(steps, list):
            counts.update(len(st["coordinates"]) for st in steps
                          if isinstance(st, dict) and isinstance(st.get("coordinates"), list))
    return counts.most_common(1)[0][0] if counts else None


def _incomplete(step, natoms: int | None) -> tuple[str, str] | None:
    """``(reason, detail)`` when the reference loader would skip ``step`` (energy / gradient
    missing or non-finite, atom count differing from the trajectory's), else None. Anything
    else, including values that cannot be decoded, is left to the full checks (a bad record)."""
    if step is None:
        return "empty step", "the step is None"
    if not isinstance(step, dict):
        return None
    energy = step.get("energy")
    if energy is None:
        return "missing energy", "energy is None or absent"
    try:
        if not math.isfinite(float(energy)):
            return "non-finite energy", f"energy is {energy!r}"
    except (TypeError, ValueError):
        return None
    grad, coords = step.get("gradient"), step.get("coordinates")
    if grad is None:
        return "missing gradient", "gradient is None or absent"
    if isinstance(coords, list):
        if natoms is not None and len(coords) != natoms:
            return "atom count differs", f"step has {len(coords)} atoms, the trajectory {natoms}"
        if isinstance(grad, list) and len(grad) != len(coords):
            return "atom count differs", f"gradient has {len(grad)} atoms, coordinates {len(coords)}"
    try:
        g = np.array([[a["dx"], a["dy"], a["dz"]] for a in grad], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return None
    if not np.all(np.isfinite(g)):
        return "non-finite gradient", "gradient contains NaN or inf"
    return None
