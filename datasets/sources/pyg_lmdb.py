"""LMDB files of pickled torch-geometric ``Data`` (OC20 / OC22 preprocessed form).

Keys are ASCII integers (``b"0"``, ``b"1"``, ...; a ``b"length"`` key may hold
the entry count and is skipped). Entries are converted in numeric key order, so
structure ``i`` of a file is entry ``str(i)`` of fairchem's dataset (LMDB
itself walks ``0, 1, 10, 100, 101, 11``...); a file whose keys are not all
integers is read in byte order, and the shard attribute ``lmdb_key_order``
says so. Values are pickled ``Data`` objects read with
the restricted unpickler of :mod:`.safe_pickle` (``Data``, its storage
classes, torch tensors and numpy arrays only). ``Data`` pickled by PyG 1.x
(attributes in ``__dict__``, no ``_store``) is read too.

Fields used: ``pos`` (N, 3) Å, ``atomic_numbers`` (N,), ``natoms``, ``cell``
(1, 3, 3) Å, ``y`` (or ``energy``) eV, ``force`` (or ``forces``) (N, 3) eV/Å,
``tags``, ``fixed``, ``sid``, ``fid``, optional ``pbc`` (default: periodic in
all three directions, as in the VASP slab calculations). Both field sets are
read: the 2021 S2EF LMDBs (``y``, ``force``, float ``atomic_numbers`` and
``fixed``, tensor ``fid``) and fairchem's current writer (``energy``,
``forces``, uint8 ``atomic_numbers``, int32 ``fixed``, plain-int ``fid``).
Without ``sid`` the trajectory id is ``file_index << 40 | key number``.

IS2RE / relaxed-energy LMDBs (``y_init``, ``y_relaxed``, ``pos_relaxed``, no
forces) are refused with a message naming that layout: every structure of a
shard needs forces.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError
from ..structure import checked_structure
from .base import Unit, stable_id
from .lmdb_files import iter_lmdb
from .safe_pickle import safe_loads

_ALIASES = {"energy": ("y", "energy"), "forces": ("force", "forces")}


def data_fields(obj) -> dict:
    """The fields of an unpickled ``Data`` (PyG 2.x or 1.x) or plain dict, as numpy / Python values."""
    if isinstance(obj, dict):
        raw = obj
    elif "_store" in getattr(obj, "__dict__", {}):
        raw = obj.to_dict()
    elif hasattr(obj, "__dict__"):
        raw = {k: v for k, v in obj.__dict__.items() if v is not None}
    else:
        raise TypeError(type(obj).__name__)
    out = {}
    for k, v in raw.items():
        out[k] = v.detach().cpu().numpy() if hasattr(v, "detach") else v
    return out


IS2RE_FIELDS = ("y_init", "y_relaxed", "pos_relaxed")


def iter_data_lmdb(source, index: int, path: Path, state: dict | None) -> Iterator[Unit]:
    """Units of one Data LMDB for ``source`` (an OC20/OC22 source object), in numeric key order.

    Records the key order used in ``source.key_order[str(path)]`` and the energy
    field names met in ``source.energy_fields``.
    """
    info: dict = {}
    try:
        for n, key, value in iter_lmdb(path, state, skip_keys=(b"length",), order="numeric", info=info):
            source.key_order[str(path)] = info["key_order"]
            unit = Unit({"file": index, "n": n, "key": key.hex()})
            where = f"key {key.decode('ascii', 'replace')!r}"
            try:
                unit.structures.append(_structure(source, index, path, where, key, value))
            except DataError as err:
                if err.fatal:
                    raise
                unit.errors.append(err)
            yield unit
    except DataError as err:
        yield Unit({"file": index + 1, "n": 0}, errors=[err])


def _structure(source, index: int, path, where, key: bytes, value: bytes):
    if not key.isdigit():
        raise DataError(path, where, "bad key: expected an ASCII integer")
    try:
        fields = data_fields(safe_loads(value))
    except pickle.UnpicklingError as exc:
        raise DataError(path, where, f"corrupt value: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle raises anything
        raise DataError(path, where, f"corrupt value: cannot unpickle ({exc!r})") from None
    names = {name: next((a for a in aliases if fields.get(a) is not None), None) for name, aliases in _ALIASES.items()}
    get = {name: None if a is None else fields[a] for name, a in names.items()}
    if get["energy"] is None and any(f in fields for f in IS2RE_FIELDS):
        have = ", ".join(f for f in IS2RE_FIELDS if f in fields)
        raise DataError(path, where, f"IS2RE / relaxed-energy layout ({have}; no per-atom forces): not converted, "
                                     "every structure of an mlip shard needs forces; convert the S2EF files "
                                     "(extxyz + txt or S2EF LMDBs) instead", fatal=True)
    if names["energy"] is not None:
        source.energy_fields.add(names["energy"])
    sid = fields.get("sid")
    fid = fields.get("fid")
    s = checked_structure(
        path, where, positions=fields.get("pos"), atomic_numbers=fields.get("atomic_numbers"),
        energy=get["energy"], forces=get["forces"], cell=fields.get("cell"),
        pbc=fields.get("pbc", np.ones(3, bool)), natoms=fields.get("natoms"),
        tags=fields.get("tags"), fixed=fields.get("fixed"),
        trajectory_id=stable_id(sid) if sid is not None else (index << 40) | int(key),
        frame_id=stable_id(fid) if fid is not None else 0)
    return source.subtract_element_energies(path, where, s)
