"""OC20 S2EF (extxyz + txt, or LMDB) and OC22 (LMDB) readers.

OC20 extxyz: each ``name.extxyz`` / ``name.extxyz.xz`` comes with
``name.txt`` or ``name.txt.xz`` (the download ships both files compressed,
fairchem's ``uncompress.py`` turns them into the plain pair; either form is
read), one line per frame, ``random<sid>,frame<fid>,<reference energy>``.
The frame's energy is the total DFT energy (RPBE, eV); with
``subtract_reference`` the reference is subtracted, giving the adsorption
energy used for OC20 training. Trajectory id = sid, frame id = fid; tags and
fixed atoms (``move_mask``) are kept.

OC20 / OC22 LMDB: see :mod:`.pyg_lmdb`. OC22 energies are total energies; its
per-element linear reference (``.npz`` with ``coeff``) is subtracted with the
``element_energies`` option.
"""

from __future__ import annotations

import lzma
import re
from pathlib import Path
from typing import Iterator

from ..errors import DataError
from .base import Unit
from .extxyz import ExtxyzSource
from .pyg_lmdb import iter_data_lmdb
from .xyz_frames import iter_frames, parse_frame

_TXT = re.compile(r"^\s*(?:random)?(\d+)\s*,\s*(?:frame)?(\d+)\s*,\s*(\S+)\s*$")


def txt_candidates(path: Path) -> list[Path]:
    """The possible reference files of an OC20 ``.extxyz[.xz]`` file: ``N.txt``, then ``N.txt.xz``."""
    name = path.name
    stem = path.stem
    for suffix in (".extxyz.xz", ".extxyz", ".xyz.xz", ".xyz"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            break
    return [path.with_name(stem + ".txt"), path.with_name(stem + ".txt.xz")]


def txt_for(path: Path) -> Path:
    """The reference file of an OC20 ``.extxyz[.xz]`` file: the first of :func:`txt_candidates` that
    exists (``N.txt`` before ``N.txt.xz``); ``N.txt`` when neither does."""
    candidates = txt_candidates(path)
    return next((c for c in candidates if c.exists()), candidates[0])


def _open_txt(txt: Path):
    return lzma.open(txt, "rt") if txt.suffix == ".xz" else open(txt)


def _readline(handle, txt: Path) -> str:
    try:
        return handle.readline()
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as exc:
        raise DataError(txt, "", f"cannot read reference file (corrupt or truncated archive): {exc}",
                        fatal=True) from None


def is_lmdb(path: Path) -> bool:
    """True for an ``.lmdb`` file or a directory holding ``data.mdb``."""
    return path.suffix == ".lmdb" or (path.is_dir() and (path / "data.mdb").exists())


class OC20Source(ExtxyzSource):
    """Reader for OC20 S2EF files (module docstring)."""

    format = "oc20"
    patterns = ("*.extxyz", "*.extxyz.xz", "*.lmdb")
    level_of_theory = "RPBE (VASP, PAW)"

    def __init__(self, paths, options=None):
        super().__init__(paths, options)
        self.key_order: dict[str, str] = {}  # LMDB file -> "numeric" / "byte"
        self.energy_fields: set[str] = set()  # Data fields the LMDB energies came from (y, energy)

    def attrs(self) -> dict:
        a = super().attrs()
        if self.key_order:
            byte = sorted(Path(p).name for p, o in self.key_order.items() if o != "numeric")
            a["lmdb_key_order"] = ("byte order: keys are not all integers in " + ", ".join(byte) if byte else
                                   "numeric (integer keys in increasing order, as fairchem indexes them)")
        return a

    def _lmdb_fields(self) -> str:
        names = sorted(self.energy_fields) or ["y"]
        return f"LMDB Data field{'s' if len(names) > 1 else ''} " + " / ".join(names)

    def energy_reference(self) -> str:
        kinds = {is_lmdb(p) for p in self.files}
        if kinds == {True}:
            ref = f"as stored in the {self._lmdb_fields()} (OC20 S2EF LMDBs usually hold adsorption energies)"
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
                handle = _open_txt(txt)
            except OSError as exc:
                names = " or ".join(c.name for c in txt_candidates(path))
                raise DataError(txt, "", f"missing reference file for {path.name} (looked for {names}): {exc}",
                                fatal=True) from None
            with handle:
                for _ in range(start):
                    _readline(handle, txt)
                for raw in iter_frames(path, start, offset):
                    unit = Unit({"file": index, "n": raw.index + 1, "offset": raw.offset})
                    line = _readline(handle, txt)
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
                extra = _readline(handle, txt)
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
        ref = f"total DFT energy (from the {self._lmdb_fields()})"
        if self.options.element_energies is not None:
            ref += f" minus the linear reference from {Path(self.options.element_energies.source).name}"
        return ref

    def iter_file(self, index: int, path: Path, state: dict | None) -> Iterator[Unit]:
        if not is_lmdb(path):
            yield Unit({"file": index + 1, "n": 0},
                       errors=[DataError(path, "", "oc22 reads LMDB files only (.lmdb)", fatal=True)])
            return
        yield from iter_data_lmdb(self, index, path, state)
