"""Read one HDF5 shard: validated, lazily opened, in contiguous blocks.

A :class:`ShardReader` may be created in the main process and pickled or
forked into DataLoader workers: it holds no open handle until the first read
and reopens the file when it finds itself in a new process (h5py handles do
not survive a fork).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .errors import DataError
from .schema import (
    ATTRS_DIGEST,
    FIELD_BY_NAME,
    FIELDS,
    OFFSETS,
    OPTIONAL_FIELDS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    SPLITS_GROUP,
    attrs_digest,
)
from .splits import SplitState, in_shard_state, read_splits_file, splits_path


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


_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError)
_VALIDATE_BLOCK = 1 << 20


def open_h5(path: str | Path, cache_bytes: int = 4 << 20) -> h5py.File:
    """Open an HDF5 file read-only without file locking.

    No file locking: committed shards are never written in place (splits live in side
    files), so there is nothing for a lock to guard, and locks fail on some network file
    systems.

    Raises:
        DataError: if the file is missing, truncated or not HDF5.
    """
    try:
        return h5py.File(path, "r", locking=False, rdcc_nbytes=cache_bytes)
    except _H5_ERRORS as exc:
        raise DataError(path, "", f"cannot open HDF5 file (missing, truncated or corrupt): {exc}") from exc


@contextlib.contextmanager
def _reading(path, where: str):
    """Turn whatever h5py raises on corrupt bytes into a DataError naming the file and ``where``."""
    try:
        yield
    except DataError:
        raise
    except _H5_ERRORS as exc:
        text = str(exc)
        # fletcher32 reports a bad chunk as a failed filter (so would a corrupt lzf/gzip chunk)
        bad_sum = "checksum" in text.lower() or "filter returned failure" in text
        what = "checksum mismatch" if bad_sum else "cannot read"
        raise DataError(path, where, f"{what} (corrupt file): {type(exc).__name__}: {text}") from exc


def shard_uid(attrs: dict) -> str:
    """The identity of a shard: its ``uid`` attribute, or for shards written before uids a
    digest of the attributes that differ between shards of one conversion."""
    if attrs.get("uid"):
        return str(attrs["uid"])
    keys = ("created", "n_structures", "n_atoms", "resume_cursor", "source_files", "skip_report")
    return "legacy-" + attrs_digest({k: attrs.get(k) for k in keys})[:20]


def _check_offsets(path, f: h5py.File, n_s: int, n_a: int) -> None:
    """Offsets start at 0, never decrease, end at the atom count, and their steps are ``natoms``."""
    off_ds, nat_ds = f[OFFSETS], f["natoms"]
    with _reading(path, OFFSETS):
        first, last = int(off_ds[0]), int(off_ds[-1])
    if first != 0 or last != n_a:
        raise DataError(path, OFFSETS, f"offsets run {first}..{last}, expected 0..{n_a} (truncated or corrupt shard)")
    for a in range(0, n_s, _VALIDATE_BLOCK):
        b = min(a + _VALIDATE_BLOCK, n_s)
        with _reading(path, OFFSETS):
            step = np.diff(np.asarray(off_ds[a:b + 1], dtype=np.int64))
        with _reading(path, "natoms"):
            nat = np.asarray(nat_ds[a:b], dtype=np.int64)
        bad = np.flatnonzero(step < 0)
        if len(bad):
            raise DataError(path, OFFSETS, f"offsets decrease at structure {a + int(bad[0])} (corrupt shard)")
        bad = np.flatnonzero(step != nat)
        if len(bad):
            i = int(bad[0])
            raise DataError(path, OFFSETS, f"offsets disagree with natoms at structure {a + i}: offsets give "
                                           f"{step[i]} atoms, natoms {nat[i]} (corrupt shard)")


def _check_schema(path, f: h5py.File) -> dict:
    """Validate the layout and the structure of the data; return the shard's summary metadata."""
    with _reading(path, "root attributes"):
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        names = set(f.keys())
    if ATTRS_DIGEST in attrs and attrs_digest(attrs) != attrs[ATTRS_DIGEST]:
        raise DataError(path, "root attributes", "checksum mismatch: the root attributes do not match their "
                                                 f"SHA-256 ({ATTRS_DIGEST}; corrupt metadata)")
    if attrs.get("schema") != SCHEMA_NAME:
        if "schema" not in attrs and {OFFSETS, "positions"} <= names:
            raise DataError(path, "root attributes", "corrupt metadata: attribute 'schema' missing or unreadable in a "
                                                     "file with mlip datasets")
        raise DataError(path, "attrs",
                        f"not an mlip dataset shard: schema={attrs.get('schema')!r}, expected {SCHEMA_NAME!r}")
    try:
        version = int(attrs.get("schema_version", -1))
    except (TypeError, ValueError):
        version = -1
    if version < 1 or version > SCHEMA_VERSION:
        raise DataError(path, "attrs", f"unsupported schema_version {version}; this mlip reads 1..{SCHEMA_VERSION}")
    for fld in FIELDS:
        if fld.required and fld.name not in names:
            raise DataError(path, fld.name, "missing field: required dataset absent")
    if OFFSETS not in names:
        raise DataError(path, OFFSETS, "missing field: required dataset absent")
    with _reading(path, "dataset 'energy'"):
        n_s = f["energy"].shape[0]
        chunks = f["energy"].chunks
    with _reading(path, "dataset 'positions'"):
        n_a = f["positions"].shape[0]
    checksummed = []
    for name in [OFFSETS] + [fld.name for fld in FIELDS if fld.name in names]:
        fld = FIELD_BY_NAME.get(name)
        with _reading(path, f"dataset {name!r}"):
            ds = f[name]
            shape, fletcher = ds.shape, bool(ds.fletcher32)
        want = (n_s + 1,) if fld is None else (n_a if fld.per_atom else n_s, *fld.shape)
        if shape != want:
            raise DataError(path, f"dataset {name!r}", f"bad shape: {shape}, expected {want}")
        checksummed.append(fletcher)
    _check_offsets(path, f, n_s, n_a)
    in_shard = None
    if SPLITS_GROUP in names:
        with _reading(path, f"group {SPLITS_GROUP!r}"):
            in_shard = in_shard_state(path, n_s, f[SPLITS_GROUP])
    return {
        "n_structures": n_s,
        "n_atoms": n_a,
        "optional": tuple(n for n in OPTIONAL_FIELDS if n in names),
        "structure_chunk": int(chunks[0]) if chunks else 1024,
        "checksums": "all" if all(checksummed) else "some" if any(checksummed) else "none",
        "in_shard_splits": in_shard,
        "attrs": attrs,
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
        splits_source: ``"side file"``, ``"in-shard"`` (older shards) or ``None``.
        attrs: root attributes.
        uid: the shard's identity (:func:`shard_uid`).
        checksums: ``"all"`` datasets carry fletcher32 checksums (verified on every read),
            ``"some"`` or ``"none"`` (shards written before checksums).

    The structure of the data is validated when the reader is made (offsets monotone and
    consistent with ``natoms`` and the array lengths, split indices in range and disjoint,
    root attributes against their checksum); every later read is checked by HDF5's
    checksums. The splits are read once, from the side file (:mod:`mlip.datasets.splits`)
    when there is one, and kept (compressed): a concurrent ``mlip-data split`` does not
    change what this reader yields.

    Raises:
        DataError: on a missing, truncated, corrupt or foreign file, naming the file and
            the dataset.
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
        self.checksums = meta["checksums"]
        self.attrs = meta["attrs"]
        self.uid = shard_uid(self.attrs)
        self.fields = [f for f in FIELDS if f.required or f.name in self.optional]
        self._in_shard_splits = meta["in_shard_splits"]
        self._file = None
        self._ds = {}
        self._pid = None
        self.reload_splits()

    def reload_splits(self) -> None:
        """(Re)read the splits: the side file if there is one, else those stored in the shard.

        Raises:
            DataError: for a corrupt side file or one written for another shard.
        """
        try:
            current, previous = read_splits_file(splits_path(self.path), self.uid, self.n_structures)
            self.splits_source = "side file"
        except FileNotFoundError:
            current, previous = self._in_shard_splits, None
            self.splits_source = "in-shard" if current is not None else None
        except OSError as exc:
            raise DataError(splits_path(self.path), "", f"cannot read splits file: {exc}") from exc
        self._split_states = (current, previous)
        self.use_split_state(current)

    @property
    def split_meta(self) -> dict:
        """How the served splits were made: ``by``, ``fractions``, ``seed``, ``n_trajectories``
        (empty without splits)."""
        return dict(self._split.meta) if self._split is not None else {}

    def use_split_state(self, state: SplitState | None) -> None:
        """Serve the splits of ``state`` (set by :func:`resolve_split_states`)."""
        self._split = state
        self.splits = dict(state.counts) if state is not None else {}

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
            with _reading(self.path, "datasets"):
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
        with _reading(self.path, f"dataset {OFFSETS!r} structures {start}:{stop}"):
            off = ds[OFFSETS][start:stop + 1]
        a0, a1 = int(off[0]), int(off[-1])
        if len(off) > 1 and (a0 < 0 or a1 > self.n_atoms or np.any(np.diff(off) < 0)):
            raise DataError(self.path, f"dataset {OFFSETS!r} structures {start}:{stop}",
                            "offsets out of order or out of range (file changed since it was opened?)")
        arrays = {}
        for fld in selected:
            lo, hi = (a0, a1) if fld.per_atom else (start, stop)
            with _reading(self.path, f"dataset {fld.name!r} structures {start}:{stop}"):
                arrays[fld.name] = ds[fld.name][lo:hi]
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
        if self._split is None or name not in self.splits:
            raise DataError(self.path, f"{SPLITS_GROUP}/{name}",
                            f"no split {name!r} (has {sorted(self.splits)}); run `mlip-data split`")
        return self._split.indices(name)


def check_duplicates(readers) -> None:
    """Refuse two readers of the same shard (same :attr:`ShardReader.uid`): the same file
    given twice, or a shard overwritten by a copy of another.

    Raises:
        DataError: naming both files.
    """
    seen = {}
    for r in readers:
        if r.uid in seen:
            first = seen[r.uid]
            same = first.path.resolve() == r.path.resolve()
            raise DataError(r.path, "", f"duplicate shard: {'the same file as' if same else 'a copy of'} "
                                        f"{first.path} (shard uid {r.uid}); each shard may appear once"
                                        + ("" if same else " (was a shard overwritten by a copy of another?)"))
        seen[r.uid] = r


def _incomplete_runs(readers, states) -> dict:
    """Split runs whose side files did not reach every shard they covered: run -> (shard, missed shard)."""
    by_uid = {r.uid: k for k, r in enumerate(readers)}

    def newer(k, run) -> bool:  # shard k serves the run that came right after ``run``
        current, previous = readers[k]._split_states
        return states[k] is current and previous is not None and previous.run == run

    out = {}
    for r, s in zip(readers, states):
        if s is None or s.run in out:
            continue
        for u in s.run_shards:
            k = by_uid.get(u)
            if k is not None and (states[k] is None or states[k].run != s.run) and not newer(k, s.run):
                out[s.run] = (r.path, readers[k].path)
                break
    return out


def resolve_split_states(readers, *, strict: bool = True) -> list:
    """Make the readers of one dataset serve splits of one ``split`` run.

    A ``mlip-data split`` killed between two shards leaves shards whose side file holds the
    new run next to shards still holding the old one. The new run is then incomplete, and
    every shard it reached goes back to the state before it (kept in its side file), so the
    dataset reads as it was before the interrupted run. Returns the state each reader now
    serves.

    Raises:
        DataError: (``strict``) when no consistent state can be found (two interrupted runs in
            a row); names the shards and says to rerun ``mlip-data split``.
    """
    states = [r._split_states[0] for r in readers]
    rolled = [False] * len(readers)
    while True:
        bad = _incomplete_runs(readers, states)
        todo = [k for k, s in enumerate(states) if s is not None and s.run in bad and not rolled[k]]
        if not todo:
            break
        for k in todo:
            states[k], rolled[k] = readers[k]._split_states[1], True
    if bad and strict:
        first, missed = next(iter(bad.values()))
        raise DataError(first, "splits", f"interrupted split: the `mlip-data split` run that wrote these splits did "
                                         f"not reach {missed}; rerun `mlip-data split` on the whole dataset")
    for r, s in zip(readers, states):
        r.use_split_state(s)
    return states


def open_shards(paths, *, cache_bytes: int = 4 << 20, retries: int = 5) -> list:
    """:class:`ShardReader` for each path, as one dataset: no shard twice
    (:func:`check_duplicates`) and the splits of one ``split`` run (:func:`resolve_split_states`).

    A ``split`` running meanwhile may be caught between two shards; the side files are then
    read again (up to ``retries`` times).
    """
    readers = [ShardReader(p, cache_bytes=cache_bytes) for p in paths]
    check_duplicates(readers)
    for attempt in range(retries + 1):
        try:
            resolve_split_states(readers)
            return readers
        except DataError:
            if attempt == retries:
                raise
            time.sleep(0.05 * (attempt + 1))
            for r in readers:
                r.reload_splits()
    return readers
