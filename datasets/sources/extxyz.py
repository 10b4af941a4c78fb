"""Extended XYZ (and anything else ASE reads) with labelled energies and forces.

Files ending in ``.xyz`` / ``.extxyz`` (optionally ``.xz``, ``.gz``, ``.bz2``)
are read frame by frame (:mod:`.xyz_frames`); other files go through
``ase.io.iread``. Values are taken to be in eV, Å, eV/Å (ASE's units).

Keys: ``energy_key`` / ``forces_key`` / ``stress_key`` name the comment-line
value or per-atom column (or calculator result). Unset, the first of
:data:`ENERGY_KEYS` / :data:`FORCE_KEYS` found in a file's first labelled
frame is used for that file (real files differ: rMD17 uses ``Energy``, 3BPA
``energy``); later frames lacking it are bad records. Stress
(:data:`STRESS_KEYS`), tags and fixed atoms are stored if the source's first
labelled frame has them, and are then required in every frame.

Periodicity (``pbc`` option): ASE treats a ``Lattice`` without a ``pbc`` key
as periodic in all directions. rMD17 frames have exactly that (a 50 Å box
around an isolated molecule). ``auto`` keeps ASE's reading and counts such
frames in a note printed at the end of the conversion; ``none`` makes every
frame non-periodic (the cell is kept for reference); ``all`` makes every frame
periodic (a cell is then required). For molecules in a box larger than twice
the cutoff plus their extent both give the same neighbours.

Trajectories (``trajectory_key``): ``frame`` gives each frame its own id
(``file_index << 40 | frame_index``), so splits are by frame, as usual for
rMD17-style sets; ``file`` makes each file one trajectory; any other value is
an info key holding an integer (or a string, hashed to a stable integer).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import ase.io
import numpy as np

from ..errors import DataError
from ..structure import checked_structure
from .base import KeyedSource, Unit
from .xyz_frames import Frame, frame_from_atoms, iter_frames, parse_frame

ENERGY_KEYS = ("energy", "Energy", "REF_energy", "free_energy")
FORCE_KEYS = ("forces", "REF_forces", "force")
STRESS_KEYS = ("stress", "REF_stress")
XYZ_SUFFIXES = (".xyz", ".extxyz")


def is_xyz(path: Path) -> bool:
    """True for .xyz / .extxyz files, compressed or not."""
    name = path.name.lower()
    for comp in ("", ".xz", ".gz", ".bz2"):
        if any(name.endswith(s + comp) for s in XYZ_SUFFIXES):
            return True
    return False


PBC_POLICIES = ("auto", "none", "all")


def resolve_pbc(pbc, explicit: bool, policy: str) -> tuple:
    """The periodicity of a frame under ``policy`` (``--pbc`` of ``mlip-data convert`` and ``mlip-md``).

    ``pbc``: ``(3,)`` bool as read (None: no Lattice); ``explicit``: the comment line had a
    ``pbc`` key. Returns ``(pbc, implicit)``; ``implicit`` is True when ``auto`` kept ASE's
    reading of a Lattice without a pbc key (periodic): count those for :func:`implicit_pbc_note`.
    """
    if policy == "none":
        return np.zeros(3, bool), False
    if policy == "all":
        return np.ones(3, bool), False
    if policy != "auto":
        raise ValueError(f"pbc must be auto, none or all; got {policy!r}")
    return pbc, bool(pbc is not None and np.any(pbc) and not explicit)


def implicit_pbc_note(n_frames: int) -> str:
    """The note shown when ``n_frames`` frames were taken as periodic from a Lattice without a pbc key."""
    return (f"{n_frames} frame(s) had a Lattice but no pbc key; ASE's reading (periodic) was kept. "
            "Pass --pbc none if these are isolated molecules (e.g. rMD17).")


class ExtxyzSource(KeyedSource):
    """Reader for extxyz files and other ASE-readable formats (see module docstring)."""

    format = "extxyz"
    patterns = ("*.xyz", "*.extxyz", "*.xyz.xz", "*.extxyz.xz", "*.xyz.gz", "*.extxyz.gz")

    def __init__(self, paths, options=None):
        super().__init__(paths, options)
        if self.options.pbc not in PBC_POLICIES:
            raise ValueError(f"pbc must be auto, none or all; got {self.options.pbc!r}")
        self.implicit_pbc_frames = 0

    def attrs(self) -> dict:
        a = super().attrs()
        a["pbc_policy"] = self.options.pbc
        return a

    def notes(self) -> list[str]:
        """Warnings to show after conversion."""
        if self.implicit_pbc_frames and self.options.pbc == "auto":
            return [implicit_pbc_note(self.implicit_pbc_frames)]
        return []

    # -- reading -------------------------------------------------------------
    def iter_file(self, index: int, path: Path, state: dict | None) -> Iterator[Unit]:
        if not is_xyz(path):
            yield from self._iter_ase(index, path, state)
            return
        start, offset = (int(state["n"]), int(state["offset"])) if state else (0, 0)
        try:
            for raw in iter_frames(path, start, offset):
                unit = Unit({"file": index, "n": raw.index + 1, "offset": raw.offset})
                where = f"frame {raw.index}"
                try:
                    frame = parse_frame(path, raw)
                    unit.structures.append(self.frame_structure(path, where, frame, index, raw.index))
                except DataError as err:
                    unit.errors.append(err)
                yield unit
        except DataError as err:
            yield Unit({"file": index + 1, "n": 0, "offset": 0}, errors=[err])

    def _iter_ase(self, index, path, state) -> Iterator[Unit]:
        start = int(state["n"]) if state else 0
        i = start
        try:
            for atoms in ase.io.iread(str(path), index=f"{start}:"):
                unit = Unit({"file": index, "n": i + 1, "offset": 0})
                try:
                    frame = frame_from_atoms(atoms)
                    unit.structures.append(self.frame_structure(path, f"frame {i}", frame, index, i))
                except DataError as err:
                    unit.errors.append(err)
                yield unit
                i += 1
        except Exception as exc:  # noqa: BLE001 - ASE readers raise many kinds
            err = DataError(path, f"frame {i}", f"cannot read with ASE: {exc!r}", fatal=True)
            yield Unit({"file": index + 1, "n": 0, "offset": 0}, errors=[err])

    # -- frame -> structure --------------------------------------------------
    def _resolve_keys(self, frame: Frame) -> None:
        # the policy (per file / per source) is KeyedSource's; here: where a frame keeps its keys
        o = self.options
        energy = o.energy_key or next((k for k in ENERGY_KEYS if k in frame.info), None)
        forces = o.forces_key or next((k for k in FORCE_KEYS if k in frame.arrays), None)
        if energy in frame.info and forces in frame.arrays:
            self._found_keys(energy, forces, lambda: {
                "tags": "tags" in frame.arrays, "fixed": frame.fixed is not None,
                "stress": o.stress_key or next((k for k in STRESS_KEYS if k in frame.info), None)})

    def frame_structure(self, path, where: str, frame: Frame, file_index: int, frame_index: int, *,
                        energy_shift: float = 0.0, trajectory_id: int | None = None, frame_id: int | None = None):
        """Build the checked :class:`~mlip.datasets.structure.Structure` of a parsed frame."""
        o = self.options
        ekey, fkey = self._file_keys(frame, file_index)
        skey = (self._has or {}).get("stress")
        if ekey is None or ekey not in frame.info:
            raise DataError(path, where, f"missing field: energy (looked for {ekey or list(ENERGY_KEYS)}; "
                                            f"frame has {sorted(frame.info)}); set --energy-key")
        if fkey is None or fkey not in frame.arrays:
            raise DataError(path, where, f"missing field: forces (looked for {fkey or list(FORCE_KEYS)}; "
                                            f"frame has {sorted(frame.arrays)}); set --forces-key")
        stress = None
        if skey is not None:
            if skey not in frame.info:
                raise DataError(path, where, f"missing field: stress {skey!r} (earlier frames have it)")
            stress = frame.info[skey]
        try:
            energy = float(np.asarray(frame.info[ekey], dtype=np.float64).reshape(()))
        except (TypeError, ValueError):
            raise DataError(path, where, f"bad value: energy {frame.info[ekey]!r} is not a number") from None
        pbc, implicit = resolve_pbc(frame.pbc, frame.pbc_explicit, o.pbc)
        self.implicit_pbc_frames += implicit
        traj = trajectory_id
        if traj is None:
            traj = self._trajectory(path, where, frame, file_index, frame_index)
        s = checked_structure(
            path, where, positions=frame.positions, atomic_numbers=frame.numbers, energy=energy - energy_shift,
            forces=frame.arrays[fkey], cell=frame.cell, pbc=pbc, stress=stress,
            tags=self._optional(frame.arrays.get("tags"), "tags"), fixed=self._optional(frame.fixed, "fixed"),
            trajectory_id=traj, frame_id=frame_index if frame_id is None else frame_id)
        return self.subtract_element_energies(path, where, s)

    def _optional(self, value, name):
        # tags / fixed are stored only if the first good frame has them (same fields in every shard).
        return value if (self._has or {}).get(name) else None

    def _trajectory(self, path, where, frame: Frame, file_index: int, frame_index: int) -> int:
        mode = self.options.trajectory_key
        if mode == "frame":
            return (file_index << 40) | frame_index
        if mode == "file":
            return file_index
        if mode not in frame.info:
            raise DataError(path, where, f"missing field: trajectory key {mode!r}")
        v = frame.info[mode]
        if isinstance(v, (int, np.integer)):
            return int(v)
        return int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little") >> 1
