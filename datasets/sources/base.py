"""What every source reader shares: options, units of work, file expansion.

A source reads its files in a fixed order and yields :class:`Unit` objects:
the structures from one source record (a PubChemQCR molecule, an OC20 frame
or LMDB entry), the errors met in it, and a cursor saying where reading
would resume after it. Converters cut shards only between units, so a
completed shard's last cursor is an exact resume point.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError
from ..references import ElementEnergies
from ..structure import Structure


@dataclass
class SourceOptions:
    """Conversion options (each applies to the formats named).

    Attributes:
        stage: pubchemqcr stage, ``pm3``, ``hf``, ``DFT_1st``, ``DFT_2nd`` or ``all``.
        subtract_reference: oc20 extxyz: subtract the ``.txt`` per-frame
            reference energy (adsorption energy) instead of keeping the total.
        element_energies: any format: per-element energies subtracted from
            each structure's energy (isolated atoms, OC22 linear reference).
        energy_key, forces_key, stress_key: extxyz/oc20 extxyz/asedb: the info /
            array names (asedb: calculator result, key-value pair or data
            entry) to read; ``None`` searches the usual names.
        pbc: extxyz: ``auto`` keeps what ASE reads (a ``Lattice`` without a
            ``pbc`` key means periodic; a warning is counted), ``none`` forces
            non-periodic (cell kept), ``all`` forces periodic.
        trajectory_key: extxyz/asedb: ``frame`` (each frame its own trajectory;
            asedb: the row's ``sid`` when it has one), ``file`` (one trajectory
            per file) or an info key (asedb: key-value pair / data) holding an id.
        level_of_theory: overrides the level of theory recorded in the output.
        strict: pubchemqcr: stop at an incomplete step (energy or gradient
            missing or non-finite, atom count differing from the trajectory's)
            like at any bad record; by default such steps are skipped, as the
            reference loader does, and counted by reason in the skip report.
            Not part of :meth:`fingerprint`: it decides only whether a run stops.
    """

    stage: str = "DFT_1st"
    subtract_reference: bool = False
    element_energies: ElementEnergies | None = None
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None
    pbc: str = "auto"
    trajectory_key: str = "frame"
    level_of_theory: str | None = None
    strict: bool = False

    def fingerprint(self) -> dict:
        """JSON-able summary used to check that a resumed run matches."""
        d = {k: getattr(self, k) for k in ("stage", "subtract_reference", "energy_key", "forces_key",
                                            "stress_key", "pbc", "trajectory_key", "level_of_theory")}
        d["element_energies"] = None if self.element_energies is None else self.element_energies.to_json()
        return d


@dataclass
class Unit:
    """The result of reading one source record.

    Attributes:
        cursor: JSON-able position after this record (``{"file": i, "n": k, ...}``).
        structures: good structures, in source order.
        errors: problems met (whole record or single steps); ``fatal`` ones
            end the file.
        skipped: records left out by design (e.g. PubChemQCR incomplete
            steps), as :class:`~mlip.errors.DataError` naming the reason:
            counted in the skip report, never raised.
    """

    cursor: dict
    structures: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


class Source:
    """Base class of the source readers.

    Args:
        paths: files, or directories searched with the class's ``patterns``.
        options: :class:`SourceOptions`.

    Raises:
        DataError: for a missing path or a directory without source files.
    """

    format = "?"
    patterns: tuple = ()
    level_of_theory = "unknown"

    def __init__(self, paths, options: SourceOptions | None = None):
        self.options = options or SourceOptions()
        self.files = expand_paths(paths, self.patterns)

    # -- metadata ------------------------------------------------------------
    def stage_names(self) -> list[str]:
        """Names of the stage codes this source writes."""
        return [""]

    def energy_reference(self) -> str:
        """Description of the energy reference of the converted energies."""
        ref = "total energy"
        if self.options.element_energies is not None:
            ref += f" minus per-element energies from {Path(self.options.element_energies.source).name}"
        return ref

    def attrs(self) -> dict:
        """Root attributes describing the converted data."""
        ee = self.options.element_energies
        return {
            "level_of_theory": self.options.level_of_theory or self.level_of_theory,
            "energy_reference": self.energy_reference(),
            "source": self.format,
            "source_files": json.dumps([str(p) for p in self.files]),
            "stage_names": json.dumps(self.stage_names()),
            "element_energies": "{}" if ee is None else ee.to_json(),
        }

    # -- reading -------------------------------------------------------------
    def iter_units(self, cursor: dict | None = None) -> Iterator[Unit]:
        """Units of all files in order, starting after ``cursor`` if given."""
        for i, path in enumerate(self.files):
            if cursor is not None and i < cursor["file"]:
                continue
            state = cursor if cursor is not None and cursor["file"] == i else None
            yield from self.iter_file(i, path, state)

    def iter_file(self, index: int, path: Path, state: dict | None) -> Iterator[Unit]:
        """Units of one file, resuming after ``state`` (a cursor) if given."""
        raise NotImplementedError

    def subtract_element_energies(self, path, where: str, s: Structure) -> Structure:
        """Apply the optional per-element reference to ``s`` (in place)."""
        ee = self.options.element_energies
        if ee is not None:
            try:
                s.energy -= ee.energy(s.atomic_numbers)
            except KeyError as exc:
                raise DataError(path, where, f"missing reference energy: {exc.args[0]}") from None
        return s


def expand_paths(paths, patterns: tuple) -> list[Path]:
    """Files from ``paths``; directories are searched (sorted) with ``patterns``."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not (p / "data.mdb").exists():
            found = sorted({q for pat in patterns for q in p.glob(pat)})
            if not found:
                raise DataError(p, "", f"no source files matching {list(patterns)} in directory")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise DataError(p, "", "no such file or directory")
    return out


def stable_id(v) -> int:
    """An integer id from a source value: integers (also numpy, integral floats, one-element integer
    arrays) as they are, anything else (e.g. a string ``sid``) hashed to a stable 63-bit integer."""
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    arr = np.asarray(v) if not isinstance(v, str) else None
    if arr is not None and arr.size == 1 and arr.dtype.kind in "iub":
        return int(arr.reshape(()))
    return int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little") >> 1


class KeyedSource(Source):
    """A source whose records name their energy / forces under varying keys (files differ:
    rMD17 "Energy", 3BPA "energy"): the keys are fixed per file by its first record that has
    both, the stress key and whether tags / fixed atoms are stored once per source (so that
    every shard stores the same fields). Subclasses implement ``_resolve_keys(record)``,
    which looks the keys up its way and hands them to :meth:`_found_keys`."""

    def __init__(self, paths, options: SourceOptions | None = None):
        super().__init__(paths, options)
        self.keys: dict[str, str] = {}
        self.keys_used: dict[str, set] = {"energy": set(), "forces": set()}
        self._keys_file = -1
        self._has: dict | None = None

    def attrs(self) -> dict:
        a = super().attrs()
        a.update({f"{k}_key": ",".join(sorted(v)) for k, v in self.keys_used.items()})
        a["stress_key"] = str((self._has or {}).get("stress"))
        return a

    def _resolve_keys(self, record) -> None:
        raise NotImplementedError

    def _found_keys(self, energy: str, forces: str, has) -> None:
        """Keys found in a record that has both: kept for the rest of its file; ``has()`` (the
        stress key, tags, fixed atoms) is asked once per source."""
        self.keys = {"energy": energy, "forces": forces}
        self.keys_used["energy"].add(energy)
        self.keys_used["forces"].add(forces)
        if self._has is None:
            self._has = has()

    def _file_keys(self, record, file_index: int) -> tuple[str | None, str | None]:
        """The (energy, forces) keys for a record of file ``file_index``: resolved at the file's
        first record that has both, else the options' keys (``None`` when not set)."""
        if self._keys_file != file_index:
            self.keys, self._keys_file = {}, file_index
        if not self.keys:
            self._resolve_keys(record)
        o = self.options
        return self.keys.get("energy", o.energy_key), self.keys.get("forces", o.forces_key)
