"""ASE databases: ``.db`` (SQLite) and ``.json`` through ``ase.db``, and fairchem's ASE-LMDB (``.aselmdb``).

The newer OC-family and OMat / OMol releases are ASE databases in fairchem's
LMDB backend (``.aselmdb``, now the ``ase-db-backends`` package); many users
keep data in ASE ``.db`` files. ``.db`` / ``.json`` files are read with
``ase.db``; ``.aselmdb`` (and ``.lmdb``) files are read here with ``lmdb``
(the ``lmdb`` extra), ``zlib`` and ASE's JSON decoder, without
``ase-db-backends``:

* one LMDB file (``subdir=False``); keys are ASCII row ids ``b"1"``,
  ``b"2"``... and the reserved ``b"nextid"``, ``b"deleted_ids"``,
  ``b"metadata"``;
* every value is zlib-compressed JSON: written by fairchem with orjson
  (arrays as nested lists) or by ``ase-db-backends`` with ASE's encoder
  (arrays as ``{"__ndarray__": [shape, dtype, values]}``); both are read;
* rows are ids ``1 .. nextid-1`` minus ``deleted_ids``, in that order (the
  order fairchem's ``AseDBDataset`` indexes); without ``nextid`` the integer
  keys in numeric order;
* a row is ASE's ``AtomsRow`` as a dict: ``numbers``, ``positions`` (Å),
  ``cell``, ``pbc``, optional ``tags``, calculator results ``energy``,
  ``free_energy``, ``forces`` (eV/Å), ``stress`` (eV/Å^3, Voigt or 3x3),
  ``key_value_pairs``, ``data`` and ``constraints`` (``FixAtoms`` dicts).

Mapping onto the schema: energy / forces / stress are looked up by name
(``energy_key`` ... options; unset, the first of the extxyz names present in
a file's first labelled row) among the row's calculator results, then its
``key_value_pairs``, then its ``data`` (OMat / OMol keep extra targets
there). Stress, tags and fixed atoms (``FixAtoms``) are stored when the first
labelled row has them; later rows without them get zeros / no fixed atoms,
as ASE reads them (rows that have them when the first had none are counted
in a note). Trajectory (``trajectory_key``): by default the row's ``sid``
(key-value pair or data; strings hashed to a stable integer) and frame id its
``fid``, else ``file_index << 40 | row id`` and the row id; ``file`` makes a
file one trajectory; any other value names a key holding the id.
"""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError
from ..structure import checked_structure
from .base import KeyedSource, Unit, stable_id
from .extxyz import ENERGY_KEYS, FORCE_KEYS, STRESS_KEYS
from .lmdb_files import import_lmdb, open_lmdb
from .safe_pickle import DecompressionLimitError, gunzip_bounded

LMDB_SUFFIXES = (".aselmdb", ".lmdb")
RESERVED_KEYS = (b"nextid", b"deleted_ids", b"metadata")
MAX_ROW_BYTES = 1 << 30
"""Largest decompressed row accepted (a zip bomb is refused, not expanded)."""


def is_aselmdb(path: Path) -> bool:
    """True for a file read as fairchem's ASE-LMDB (``.aselmdb`` or ``.lmdb``)."""
    return Path(path).suffix in LMDB_SUFFIXES


def decode_value(raw: bytes, max_bytes: int = MAX_ROW_BYTES):
    """Decode one ASE-LMDB value: zlib-compressed JSON (orjson lists or ASE ``__ndarray__`` objects).

    Raises:
        ValueError: corrupt data, or more than ``max_bytes`` once decompressed.
    """
    from ase.io.jsonio import decode

    try:
        text = gunzip_bounded(raw, max_bytes)
    except DecompressionLimitError:
        raise ValueError(f"decompresses to more than {max_bytes} bytes") from None
    except zlib.error as exc:
        raise ValueError(f"not zlib data ({exc})") from None
    except EOFError:
        raise ValueError("truncated zlib stream") from None
    try:
        return decode(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not JSON ({exc})") from None


def _lookup(row: dict, key: str):
    """``key`` among the row's calculator results / columns, then key_value_pairs, then data."""
    for place in (row, row.get("key_value_pairs") or {}, row.get("data") or {}):
        if isinstance(place, dict) and place.get(key) is not None:
            return place[key]
    return None


def _fixed(row: dict, natoms: int) -> np.ndarray | None:
    fixed = None
    for c in row.get("constraints") or []:
        if isinstance(c, dict) and c.get("name") == "FixAtoms":
            kw = c.get("kwargs") or {}
            idx = np.asarray(kw.get("indices", []))
            fixed = np.zeros(natoms, bool) if fixed is None else fixed
            fixed[idx] = True
    return fixed


class AseDBSource(KeyedSource):
    """Reader for ASE databases (``.db``, ``.json``, ``.aselmdb``; module docstring)."""

    format = "asedb"
    patterns = ("*.db", "*.aselmdb")

    def __init__(self, paths, options=None):
        super().__init__(paths, options)
        self.dropped: Counter = Counter()

    def energy_reference(self) -> str:
        names = ", ".join(sorted(self.keys_used["energy"])) or "energy"
        ref = f"as stored in the ASE database ({names})"
        if self.options.element_energies is not None:
            ref += f", minus per-element energies from {Path(self.options.element_energies.source).name}"
        return ref

    def notes(self) -> list[str]:
        """Warnings to show after conversion."""
        return [f"{n} row(s) had {what} but the first labelled row had none: not stored"
                for what, n in sorted(self.dropped.items())]

    # -- reading -------------------------------------------------------------
    def iter_file(self, index: int, path: Path, state: dict | None) -> Iterator[Unit]:
        rows = _iter_aselmdb(path, state) if is_aselmdb(path) else _iter_ase_db(path, state)
        try:
            for n, rid, row in rows:
                unit = Unit({"file": index, "n": n, "id": rid})
                if isinstance(row, DataError):
                    unit.errors.append(row)
                else:
                    try:
                        unit.structures.append(self.row_structure(path, f"row {rid}", row, index, rid))
                    except DataError as err:
                        unit.errors.append(err)
                yield unit
        except DataError as err:
            yield Unit({"file": index + 1, "n": 0}, errors=[err])
        finally:
            rows.close()  # closes the LMDB environment / database even when a raised error keeps this frame alive

    # -- row -> structure ----------------------------------------------------
    def _resolve_keys(self, row: dict) -> None:
        o = self.options
        energy = o.energy_key or next((k for k in ENERGY_KEYS if _lookup(row, k) is not None), None)
        forces = o.forces_key or next((k for k in FORCE_KEYS if _lookup(row, k) is not None), None)
        if energy is not None and forces is not None and _lookup(row, energy) is not None \
                and _lookup(row, forces) is not None:
            def has():
                numbers = row.get("numbers")
                return {"stress": o.stress_key or next((k for k in STRESS_KEYS if _lookup(row, k) is not None), None),
                        "tags": row.get("tags") is not None,
                        "fixed": _fixed(row, 0 if numbers is None else len(numbers)) is not None}

            self._found_keys(energy, forces, has)

    def row_structure(self, path, where: str, row: dict, file_index: int, rid: int):
        """Build the checked :class:`~mlip.datasets.structure.Structure` of one database row."""
        ekey, fkey = self._file_keys(row, file_index)
        has = self._has or {}
        energy = None if ekey is None else _lookup(row, ekey)
        if energy is None:
            raise DataError(path, where, f"missing field: energy (looked for {ekey or list(ENERGY_KEYS)} in the row, "
                                         "its key_value_pairs and data); set --energy-key")
        forces = None if fkey is None else _lookup(row, fkey)
        if forces is None:
            raise DataError(path, where, f"missing field: forces (looked for {fkey or list(FORCE_KEYS)} in the row, "
                                         "its key_value_pairs and data); set --forces-key")
        stress = None
        if has.get("stress"):
            stress = _lookup(row, has["stress"])
            if stress is None:
                raise DataError(path, where, f"missing field: stress {has['stress']!r} (earlier rows have it)")
        try:
            energy = float(np.asarray(energy, dtype=np.float64).reshape(()))
        except (TypeError, ValueError):
            raise DataError(path, where, f"bad value: energy {energy!r} is not a number") from None
        numbers = row.get("numbers")
        n = len(numbers) if numbers is not None else 0
        tags = row.get("tags")
        fixed = _fixed(row, n)
        if has.get("tags"):
            tags = np.zeros(n, np.int64) if tags is None else tags
        elif tags is not None and np.any(np.asarray(tags)):
            self.dropped["tags"] += 1
            tags = None
        else:
            tags = None
        if has.get("fixed"):
            fixed = np.zeros(n, bool) if fixed is None else fixed
        elif fixed is not None:
            self.dropped["FixAtoms constraints"] += 1
            fixed = None
        traj, frame = self._ids(path, where, row, file_index, rid)
        s = checked_structure(
            path, where, positions=row.get("positions"), atomic_numbers=numbers, energy=energy, forces=forces,
            cell=row.get("cell"), pbc=row.get("pbc"), stress=stress, tags=tags, fixed=fixed,
            trajectory_id=traj, frame_id=frame)
        return self.subtract_element_energies(path, where, s)

    def _ids(self, path, where, row: dict, file_index: int, rid: int) -> tuple[int, int]:
        mode = self.options.trajectory_key
        fid = _lookup(row, "fid")
        frame = rid if fid is None else stable_id(fid)
        if mode == "file":
            return file_index, rid
        if mode == "frame":
            sid = _lookup(row, "sid")
            return ((file_index << 40) | rid, rid) if sid is None else (stable_id(sid), frame)
        v = _lookup(row, mode)
        if v is None:
            raise DataError(path, where, f"missing field: trajectory key {mode!r}")
        return stable_id(v), frame


# -- backends ----------------------------------------------------------------
def _iter_ase_db(path: Path, state: dict | None) -> Iterator[tuple[int, int, dict]]:
    """``(n, row id, row dict)`` of an ASE SQLite / JSON database in id order."""
    import ase.db

    n = int(state["n"]) if state else 0
    last = int(state["id"]) if state else 0
    kind = "json" if path.suffix == ".json" else "db"
    try:
        db = ase.db.connect(str(path), type=kind, create_indices=False, use_lock_file=False)
        rows = db.select(f"id>{last}", sort="id")
        for row in rows:
            d = {k: v for k, v in row.__dict__.items() if not k.startswith("_")}
            d["key_value_pairs"] = row.key_value_pairs
            d["data"] = dict(row.data)
            d["constraints"] = [c.todict() for c in row.constraints]
            n += 1
            yield n, int(row.id), d
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - sqlite3 / json / ASE raise many kinds
        raise DataError(path, f"row after {n}", f"cannot read ASE database: {exc!r}", fatal=True) from None


def _iter_aselmdb(path: Path, state: dict | None) -> Iterator[tuple[int, int, dict | DataError]]:
    """``(n, row id, row dict or DataError)`` of an ASE-LMDB file in the order fairchem indexes it."""
    lmdb = import_lmdb()
    env = open_lmdb(path)
    n = int(state["n"]) if state else 0
    last = int(state["id"]) if state else 0
    try:
        with env.begin(buffers=False) as txn:
            ids = _row_ids(path, txn)
            for rid in ids:
                if rid <= last:
                    continue
                n += 1
                raw = txn.get(str(rid).encode("ascii"))
                where = f"row {rid}"
                if raw is None:
                    yield n, rid, DataError(path, where, "missing row: id below nextid and not deleted, but absent")
                    continue
                try:
                    row = decode_value(raw)
                except ValueError as exc:
                    yield n, rid, DataError(path, where, f"corrupt value: {exc}")
                    continue
                if not isinstance(row, dict):
                    yield n, rid, DataError(path, where, f"bad record: expected a row dict, got {type(row).__name__}")
                    continue
                yield n, rid, row
    except lmdb.Error as exc:
        raise DataError(path, f"row {n}", f"corrupt LMDB file: {exc}", fatal=True) from exc
    finally:
        env.close()


def _row_ids(path: Path, txn) -> list[int]:
    def reserved(key: bytes):
        raw = txn.get(key)
        if raw is None:
            return None
        try:
            return decode_value(raw)
        except ValueError as exc:
            raise DataError(path, key.decode(), f"corrupt value: {exc}", fatal=True) from None

    nextid = reserved(b"nextid")
    if nextid is None:
        keys = [k for k in txn.cursor().iternext(keys=True, values=False) if k not in RESERVED_KEYS]
        bad = [k for k in keys if not k.isdigit()]
        if bad:
            raise DataError(path, "", f"not an ASE-LMDB file: no 'nextid' key and non-integer keys such as {bad[0]!r}",
                            fatal=True)
        return sorted(int(k) for k in keys)
    deleted = reserved(b"deleted_ids") or []
    try:
        deleted = {int(i) for i in deleted}
        return [i for i in range(1, int(nextid)) if i not in deleted]
    except (TypeError, ValueError):
        raise DataError(path, "nextid", f"bad value: nextid {nextid!r} / deleted_ids", fatal=True) from None
