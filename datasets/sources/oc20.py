"""OC20 S2EF (extxyz + txt, or LMDB) and OC22 (LMDB) readers.

OC20 extxyz: each ``name.extxyz`` / ``name.extxyz.xz`` comes with
``name.txt``, one line per frame, ``random<sid>,frame<fid>,<reference energy>``.
The frame's energy is the total DFT energy (RPBE, eV); with
``subtract_reference`` the reference is subtracted, giving the adsorption
energy used for OC20 training. Trajectory id = sid, frame id = fid; tags and
fixed atoms (``move_mask``) are kept.

OC20 / OC22 LMDB: see :mod:`.pyg_lmdb`. OC22 energies are total energies; its
per-element linear reference (``.npz`` with ``coeff``) is subtracted with the
``element_energies`` option.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from ..errors import DataError
from .base import Unit
from .extxyz import ExtxyzSource
from .pyg_lmdb import iter_data_lmdb
from .xyz_frames import iter_frames, parse_frame

_TXT = re.compile(r"^\s*(?:random)?(\d+)\s*,\s*(?:frame)?(\d+)\s*,\s*(\S+)\s*$")


def txt_for(path: Path) -> Path:
    """The reference ``.txt`` of an OC20 ``.extxyz[.xz]`` file."""
    name = path.name
    for suffix in (".extxyz.xz", ".extxyz", ".xyz.xz", ".xyz"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".txt")
    return path.with_suffix(".txt")


def is_lmdb(path: Path) -> bool:
    """True for an ``.lmdb`` file or a directory holding ``data.mdb``."""
    return path.suffix == ".lmdb" or (path.is_dir() and (path / "data.mdb").exists())


class OC20Source(ExtxyzSource):
    """Reader for OC20 S2EF files (module docstring)."""

    format = "oc20"
    patterns = ("*.extxyz", "*.extxyz.xz", "*.lmdb")
    level_of_theory = "RPBE (VASP, PAW)"

    def energy_reference(self) -> str:
        kinds = {is_lmdb(p) for p in self.files}
        if kinds == {True}:
            ref = "as stored in the LMDB y field (OC20 S2EF LMDBs usually hold adsorption energies)"
        elif self.options.subtract_reference:
            ref = "adsorption energy: total energy minus the per-frame reference of the OC20 .txt files"
        else:
            ref = "total DFT energy (OC20 .txt references not subtracted)"
        if self.options.element_energies is not None:
            ref += f", minus per-element energies from {Path(self.options.element_energies.source).name}"
        return ref

    def iter_file(self, index: int, path: Path, state: dict | None) -> Iterator[Unit]:
        if is_lmdb(path):
            yield from iter_data_lmdb(self, index, path, state)
        else:
            yield from self._iter_extxyz(index, path, state)

    def _iter_extxyz(self, index: int, path: Path, state: dict | None) -> Iterator[Unit]:
        txt = txt_for(path)
        start, offset = (int(state["n"]), int(state["offset"])) if state else (0, 0)
        try:
            try:
                handle = open(txt)
            except OSError as exc:
                raise DataError(txt, "", f"missing reference file for {path.name}: {exc}", fatal=True) from None
            with handle:
                for _ in range(start):
                    handle.readline()
                for raw in iter_frames(path, start, offset):
                    unit = Unit({"file": index, "n": raw.index + 1, "offset": raw.offset})
                    line = handle.readline()
                    try:
                        sid, fid, ref = self._txt_line(txt, raw.index, line)
                        frame = parse_frame(path, raw)
                        unit.structures.append(self.frame_structure(
                            path, f"frame {raw.index}", frame, index, raw.index,
                            energy_shift=ref if self.options.subtract_reference else 0.0,
                            trajectory_id=sid, frame_id=fid))
                    except DataError as err:
                        if err.fatal:
                            raise
                        unit.errors.append(err)
                    yield unit
                extra = handle.readline()
                if extra.strip():
                    raise DataError(txt, "", f"more reference lines than frames in {path.name}", fatal=True)
        except DataError as err:
            yield Unit({"file": index + 1, "n": 0, "offset": 0}, errors=[err])

    @staticmethod
    def _txt_line(txt: Path, i: int, line: str) -> tuple[int, int, float]:
        if not line:
            raise DataError(txt, f"line {i + 1}", "missing reference line: fewer lines than frames", fatal=True)
        m = _TXT.match(line)
        try:
            if m is None:
                raise ValueError
            return int(m.group(1)), int(m.group(2)), float(m.group(3))
        except ValueError:
            raise DataError(txt, f"line {i + 1}", f"bad reference line {line.strip()[:80]!r}, "
                                                     "expected random<sid>,frame<fid>,<energy>") from None


class OC22Source(OC20Source):
    """Reader for OC22 S2EF-Total LMDB files of pickled ``Data`` (total energies)."""

    format = "oc22"
    patterns = ("*.lmdb",)
    level_of_theory = "PBE+U (VASP, PAW)"

    def energy_reference(self) -> str:
        ref = "total DFT energy"
        if self.options.element_energies is not None:
            ref += f" minus the linear reference from {Path(self.options.element_energies.source).name}"
        return ref

    def iter_file(self, index: int, path: Path, state: dict | None) -> Iterator[Unit]:
        if not is_lmdb(path):
            yield Unit({"file": index + 1, "n": 0},
                       errors=[DataError(path, "", "oc22 reads LMDB files only (.lmdb)", fatal=True)])
            return
        yield from iter_data_lmdb(self, index, path, state)
