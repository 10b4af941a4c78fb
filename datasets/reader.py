"""Read one HDF5 shard: validated, lazily opened, in contiguous blocks.

A :class:`ShardReader` may be created in the main process and pickled or
forked into DataLoader workers: it holds no open handle until the first read
and reopens the file when it finds itself in a new process (h5py handles do
not survive a fork).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .errors import DataError
from .schema import FIELDS, OFFSETS, OPTIONAL_FIELDS, SCHEMA_NAME, SCHEMA_VERSION, SPLITS_GROUP


@dataclass
class Block:
    """Structures ``start:stop`` of one shard, as numpy arrays.

    Attributes:
        start, stop: structure range inside the shard.
        offsets: (n+1,) int64 atom offsets rebased to 0 (n = stop - start).
        arrays: schema name -> array; per-atom arrays have ``offsets[-1]`` rows,
            per-structure arrays ``n`` rows (see :mod:`mlip.datasets.schema`).
    """

    start: int
    stop: int
    offsets: np.ndarray
    arrays: dict


def open_h5(path: str | Path, cache_bytes: int = 4 << 20) -> h5py.File:
    """Open an HDF5 file read-only without file locking.

    Raises:
        DataError: if the file is missing, truncated or not HDF5.
    """
    try:
        return h5py.File(path, "r", locking=False, rdcc_nbytes=cache_bytes)
    except (OSError, ValueError) as exc:
        raise DataError(path, "", f"cannot open HDF5 file (missing, truncated or corrupt): {exc}") from exc


def _check_schema(path, f: h5py.File) -> dict:
    """Validate the layout and return the shard's summary metadata."""
    attrs = f.attrs
    if attrs.get("schema") != SCHEMA_NAME:
        raise DataError(path, "attrs",
                        f"not an mlip dataset shard: schema={attrs.get('schema')!r}, expected {SCHEMA_NAME!r}")
    version = int(attrs.get("schema_version", -1))
    if version < 1 or version > SCHEMA_VERSION:
        raise DataError(path, "attrs", f"unsupported schema_version {version}; this mlip reads 1..{SCHEMA_VERSION}")
    for fld in FIELDS:
        if fld.required and fld.name not in f:
            raise DataError(path, fld.name, "missing field: required dataset absent")
    if OFFSETS not in f:
        raise DataError(path, OFFSETS, "missing field: required dataset absent")
    n_s = f["energy"].shape[0]
    n_a = f["positions"].shape[0]
    for fld in FIELDS:
        if fld.name in f:
            want = (n_a if fld.per_atom else n_s, *fld.shape)
            if f[fld.name].shape != want:
                raise DataError(path, fld.name, f"bad shape: {f[fld.name].shape}, expected {want}")
    off = f[OFFSETS]
    if off.shape != (n_s + 1,):
        raise DataError(path, OFFSETS, f"bad shape: {off.shape}, expected ({n_s + 1},)")
    try:
        first, last = int(off[0]), int(off[-1])
    except OSError as exc:
        raise DataError(path, OFFSETS, f"cannot read (truncated or corrupt file): {exc}") from exc
    if first != 0 or last != n_a:
        raise DataError(path, OFFSETS, f"offsets run {first}..{last}, expected 0..{n_a} (truncated or corrupt shard)")
    splits = {}
    if SPLITS_GROUP in f:
        splits = {k: int(v.shape[0]) for k, v in f[SPLITS_GROUP].items()}
    return {
        "n_structures": n_s,
        "n_atoms": n_a,
        "optional": tuple(n for n in OPTIONAL_FIELDS if n in f),
        "structure_chunk": int(f["energy"].chunks[0]) if f["energy"].chunks else 1024,
        "splits": splits,
        "attrs": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()},
    }


class ShardReader:
    """Read-only access to one shard.

    Args:
        path: the ``.h5`` shard.
        cache_bytes: HDF5 chunk cache per dataset (raise it for random access).

    Attributes:
        n_structures, n_atoms: sizes.
        optional: optional fields present.
        structure_chunk: chunk rows of per-structure arrays (block alignment).
        splits: split name -> size.
        attrs: root attributes.

    Raises:
        DataError: on a missing, truncated, corrupt or foreign file.
    """

    def __init__(self, path: str | Path, *, cache_bytes: int = 4 << 20):
        self.path = Path(path)
        self.cache_bytes = cache_bytes
        with open_h5(self.path, cache_bytes) as f:
            meta = _check_schema(self.path, f)
        self.n_structures = meta["n_structures"]
        self.n_atoms = meta["n_atoms"]
        self.optional = meta["optional"]
        self.structure_chunk = meta["structure_chunk"]
        self.splits = meta["splits"]
        self.attrs = meta["attrs"]
        self.fields = [f for f in FIELDS if f.required or f.name in self.optional]
        self._file = None
        self._ds = {}
        self._pid = None

    def json_attr(self, name: str, default=None):
        """A root attribute stored as JSON, decoded."""
        v = self.attrs.get(name)
        return default if v is None else json.loads(v)

    @property
    def file(self) -> h5py.File:
        """The open h5py file, (re)opened lazily in the current process."""
        if self._file is None or self._pid != os.getpid():
            self._file = open_h5(self.path, self.cache_bytes)
            self._pid = os.getpid()
            # Dataset lookups by name cost ~0.1 ms each; keep the objects.
            self._ds = {name: self._file[name] for name in [OFFSETS] + [f.name for f in self.fields]}
        return self._file

    def close(self) -> None:
        """Close the handle if this process opened it."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._ds = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_file=None, _ds={}, _pid=None)
        return state

    def read_block(self, start: int, stop: int, fields=None) -> Block:
        """Read structures ``start:stop`` with one contiguous read per dataset.

        Args:
            fields: schema names to read (default: every field of the shard); reading only
                the columns a statistic needs (e.g. ``("atomic_numbers", "energy")``) skips
                the positions and forces.

        Raises:
            DataError: if the range is outside the shard, a field is not stored in it, or
                the data cannot be read (corrupt chunks).
        """
        if not 0 <= start <= stop <= self.n_structures:
            raise DataError(self.path, f"structures {start}:{stop}", f"index out of range 0..{self.n_structures}")
        self.file  # noqa: B018 - opens lazily
        ds = self._ds
        if fields is None:
            selected = self.fields
        else:
            stored = {f.name: f for f in self.fields}
            missing = [name for name in fields if name not in stored]
            if missing:
                raise DataError(self.path, f"dataset {missing[0]!r}",
                                f"missing field: not stored in this shard (it has {sorted(stored)})")
            selected = [stored[name] for name in fields]
        try:
            off = ds[OFFSETS][start:stop + 1]
            a0, a1 = int(off[0]), int(off[-1])
            arrays = {}
            for fld in selected:
                lo, hi = (a0, a1) if fld.per_atom else (start, stop)
                arrays[fld.name] = ds[fld.name][lo:hi]
        except OSError as exc:
            raise DataError(self.path, f"structures {start}:{stop}", f"cannot read (corrupt file): {exc}") from exc
        return Block(start, stop, off - a0, arrays)

    def iter_blocks(self, fields=None, *, size: int = 65536) -> Iterator[Block]:
        """The whole shard as consecutive blocks of ``size`` structures (:meth:`read_block`).

        Memory stays bounded by one block; ``fields`` as in :meth:`read_block`.
        """
        for a in range(0, self.n_structures, size):
            yield self.read_block(a, min(a + size, self.n_structures), fields)

    def split_indices(self, name: str) -> np.ndarray:
        """Sorted structure indices (int64) of split ``name``.

        Raises:
            DataError: if the shard has no such split.
        """
        f = self.file
        if SPLITS_GROUP not in f or name not in f[SPLITS_GROUP]:
            raise DataError(self.path, f"{SPLITS_GROUP}/{name}",
                               f"no split {name!r} (has {sorted(self.splits)}); run `mlip-data split`")
        return f[SPLITS_GROUP][name][:]
