"""Frame-by-frame reading of (extended) XYZ files, plain or compressed.

:func:`iter_frames` cuts a file into frames by their atom-count line without
parsing them, so one bad frame can be reported and skipped, a truncated file
is detected, and a resumed conversion can seek to a byte offset.
:func:`parse_frame` parses a frame with ASE's own comment-line and
``Properties`` parsers but converts the atom table with numpy (3-5x faster
than building ``ase.Atoms``); anything it does not understand falls back to
``ase.io.extxyz.read_xyz``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
from ase.io.extxyz import key_val_str_to_dict, read_xyz

from ..errors import DataError
from ..units import symbol_to_z

_OPENERS = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}
_PBC_KEY = re.compile(r"(?:^|\s)pbc\s*=", re.IGNORECASE)
_TRUE = np.array(["T", "True", "true", "TRUE", "1"])


def open_binary(path: Path):
    """Open a file for binary reading, decompressing .xz / .gz / .bz2."""
    return _OPENERS.get(Path(path).suffix, open)(path, "rb")


@dataclass
class RawFrame:
    """The text of one frame: ``comment`` line and ``natoms`` atom lines.

    Attributes:
        index: frame number in the file (0-based).
        offset: byte offset (in the decompressed stream) just after the frame.
    """

    index: int
    comment: str
    lines: list
    offset: int


@dataclass
class Frame:
    """A parsed frame.

    Attributes:
        numbers: (N,) atomic numbers.
        positions: (N, 3) Å.
        cell: (3, 3) lattice vectors as rows, or None.
        pbc: (3,) bool, or None when neither ``pbc`` nor ``Lattice`` is given.
        pbc_explicit: whether the comment line had a ``pbc`` key.
        info: per-frame values (energy, stress, ... and calculator results).
        arrays: per-atom arrays other than species/positions (forces, tags, ...).
        fixed: (N,) bool from ``move_mask`` / FixAtoms, or None.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray | None
    pbc: np.ndarray | None
    pbc_explicit: bool
    info: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    fixed: np.ndarray | None = None


def iter_frames(path: Path, start_index: int = 0, start_offset: int = 0) -> Iterator[RawFrame]:
    """Raw frames of an XYZ file from a byte offset.

    Raises:
        DataError (fatal): on an unreadable atom-count line or a truncated
            last frame; frames before it have been yielded.
    """
    index = start_index
    try:
        with open_binary(path) as f:
            if start_offset:
                f.seek(start_offset)
            while True:
                head = f.readline()
                if not head:
                    return
                if not head.strip():
                    continue  # blank lines between / after frames
                try:
                    natoms = int(head.split()[0])
                    if natoms < 0:
                        raise ValueError
                except ValueError:
                    raise DataError(path, f"frame {index}", f"bad atom-count line {head[:60]!r}", fatal=True) from None
                comment = f.readline()
                lines = [f.readline() for _ in range(natoms)]
                if not comment or (natoms and not lines[-1]):
                    got = sum(1 for ln in lines if ln)
                    raise DataError(path, f"frame {index}", f"truncated file: frame has {got} of {natoms} atom lines",
                                       fatal=True)
                yield RawFrame(index, comment.decode("utf-8", "replace").strip(),
                               [ln.decode("utf-8", "replace") for ln in lines], f.tell())
                index += 1
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise DataError(path, f"frame {index}", f"cannot read file (corrupt or truncated archive): {exc}",
                           fatal=True) from exc


@lru_cache(maxsize=64)
def _properties(spec: str) -> tuple:
    fields = spec.split(":")
    if len(fields) % 3:
        raise ValueError(f"bad Properties {spec!r}")
    return tuple((fields[i], fields[i + 1], int(fields[i + 2])) for i in range(0, len(fields), 3))


def parse_frame(path: Path, raw: RawFrame) -> Frame:
    """Parse a raw frame.

    Raises:
        DataError: naming the frame (bad columns, unknown element, ...).
    """
    where = f"frame {raw.index}"
    try:
        return _fast_parse(path, where, raw)
    except DataError:
        raise
    except Exception:  # noqa: BLE001 - anything unusual: let ASE try
        return _ase_parse(path, where, raw)


def _fast_parse(path, where, raw: RawFrame) -> Frame:
    info = key_val_str_to_dict(raw.comment) if raw.comment else {}
    pbc_explicit = "pbc" in info
    pbc = info.pop("pbc", None)
    lattice = info.pop("Lattice", None)
    if pbc is None and lattice is not None:
        pbc = [True, True, True]
    cell = None if lattice is None else np.asarray(lattice, dtype=np.float64).T
    props = _properties(info.pop("Properties", "species:S:1:pos:R:3"))
    ncols = sum(n for _, _, n in props)
    rows = [ln.split() for ln in raw.lines]
    for j, r in enumerate(rows):
        if len(r) != ncols:
            raise DataError(path, where, f"bad atom line {j}: {len(r)} columns, Properties declares {ncols}")
    table = np.array(rows, dtype=str).reshape(len(rows), ncols)
    arrays, col = {}, 0
    for name, kind, n in props:
        part = table[:, col:col + n] if n > 1 else table[:, col]
        col += n
        if kind == "R":
            arrays[name] = part.astype(np.float64)
        elif kind == "I":
            arrays[name] = part.astype(np.int64)
        elif kind == "L":
            arrays[name] = np.isin(part, _TRUE)
        elif kind == "S":
            arrays[name] = part
        else:
            raise ValueError(kind)
    if "species" in arrays:
        try:
            numbers = np.array([symbol_to_z(s) for s in arrays.pop("species")], dtype=np.int64)
        except KeyError as exc:
            raise DataError(path, where, f"unknown element symbol {str(exc.args[0])!r}") from None
    elif "Z" in arrays:
        numbers = arrays.pop("Z")
    else:
        raise ValueError("no species")
    positions = arrays.pop("pos")
    fixed = None
    if "move_mask" in arrays and arrays["move_mask"].ndim == 1:
        fixed = ~arrays.pop("move_mask")
    return Frame(numbers, positions, cell, None if pbc is None else np.asarray(pbc, bool), pbc_explicit,
                 info, arrays, fixed)


def _ase_parse(path, where, raw: RawFrame) -> Frame:
    text = f"{len(raw.lines)}\n{raw.comment}\n{''.join(raw.lines)}"
    try:
        atoms = next(read_xyz(io.StringIO(text), index=slice(0, 1)))
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds
        problem = f"unknown element symbol: {exc}" if isinstance(exc, KeyError) else f"cannot parse frame: {exc!r}"
        raise DataError(path, where, problem) from None
    return frame_from_atoms(atoms, pbc_explicit=bool(_PBC_KEY.search(raw.comment)))


def frame_from_atoms(atoms, pbc_explicit: bool = True) -> Frame:
    """A :class:`Frame` from an ``ase.Atoms`` (calculator results go to info/arrays)."""
    info = dict(atoms.info)
    arrays = {k: v for k, v in atoms.arrays.items() if k not in ("numbers", "positions")}
    if atoms.calc is not None:
        for k, v in atoms.calc.results.items():
            (arrays if np.ndim(v) == 2 and len(v) == len(atoms) else info)[k] = v
    fixed = None
    from ase.constraints import FixAtoms

    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            fixed = np.zeros(len(atoms), bool) if fixed is None else fixed
            fixed[c.index] = True
    has_cell = atoms.cell.rank > 0
    return Frame(atoms.numbers.copy(), atoms.positions.copy(), atoms.cell.array.copy() if has_cell else None,
                 atoms.pbc.copy(), pbc_explicit, info, arrays, fixed)
