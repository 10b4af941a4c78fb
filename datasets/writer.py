"""Write one HDF5 shard in the ragged schema, atomically.

Data go to a temporary file of this process next to ``path``
(:func:`mlip.atomic.atomic_path`: ``<name>.<pid>.<random>.tmp``);
:meth:`ShardWriter.commit` flushes it to disk and renames it to ``path`` only
after everything is written, so an interrupted or failed write never leaves a
file under the final name, and two writers never share a temporary file.
Temporaries of a killed run are removed by ``convert``'s resume.

Every dataset is written with HDF5's fletcher32 checksum filter and the root
attributes with their SHA-256 (``attrs_sha256``), verified by the reader.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import uuid
from pathlib import Path

import h5py
import numpy as np

from mlip.atomic import atomic_path

from .errors import DataError
from .schema import (
    ATOM_CHUNK,
    ATTRS_DIGEST,
    CHECKSUMS,
    FIELD_BY_NAME,
    FIELDS,
    OFFSETS,
    OPTIONAL_FIELDS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    STRUCTURE_CHUNK,
    UNITS,
    attrs_digest,
)
from .structure import Structure

_COMPRESSION = {"none": {}, None: {}, "lzf": {"compression": "lzf"},
                "gzip": {"compression": "gzip", "compression_opts": 4}}


class ShardWriter:
    """Append structures to one shard (see :mod:`mlip.datasets.schema`).

    Args:
        path: final file name; data are written to a temporary file of this process
            first (:attr:`tmp`).
        attrs: root attributes (level_of_theory, energy_reference, source,
            stage_names, ...); schema, version and units are added here.
        optional: optional fields present in this shard, any of
            ``"stress"``, ``"tags"``, ``"fixed"``; every structure must then
            carry exactly these.
        compression: ``"none"`` (default), ``"lzf"`` or ``"gzip"``.
        atom_chunk, structure_chunk: HDF5 chunk rows.
        flush_atoms: buffered atoms before a write to disk.

    Use as a context manager: leaving the block normally commits, an exception
    removes the temporary file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        attrs: dict | None = None,
        optional=(),
        compression: str | None = "none",
        atom_chunk: int = ATOM_CHUNK,
        structure_chunk: int = STRUCTURE_CHUNK,
        flush_atoms: int = 1 << 18,
    ):
        self.path = Path(path)
        self.optional = frozenset(optional)
        unknown = self.optional - set(OPTIONAL_FIELDS)
        if unknown:
            raise ValueError(f"unknown optional fields {sorted(unknown)}; allowed: {OPTIONAL_FIELDS}")
        if compression not in _COMPRESSION:
            raise ValueError(f"compression must be one of none, lzf, gzip; got {compression!r}")
        self.fields = [f for f in FIELDS if f.required or f.name in self.optional]
        self.flush_atoms = flush_atoms
        self.n_structures = 0
        self.n_atoms = 0
        self._buffer: list[Structure] = []
        self._buffered_atoms = 0
        self._elements = np.zeros(256, dtype=bool)
        self._committed = False
        # The rename on commit and the removal on abort are those of atomic_path, held open
        # across the writer's life: closing the stack renames, closing it with an error deletes.
        self._rename = contextlib.ExitStack()
        self.tmp = self._rename.enter_context(atomic_path(self.path))
        # v110 file format: chunk indexes made for growing datasets; readable by HDF5 >= 1.10.
        self._file = h5py.File(self.tmp, "w", libver=("v110", "latest"), locking=False)
        comp = {**_COMPRESSION[compression], "fletcher32": True}
        for f in self.fields:
            rows = atom_chunk if f.per_atom else structure_chunk
            self._file.create_dataset(f.name, shape=(0, *f.shape), maxshape=(None, *f.shape),
                                      dtype=f.dtype, chunks=(rows, *f.shape), **comp)
        off = self._file.create_dataset(OFFSETS, shape=(1,), maxshape=(None,), dtype=np.int64,
                                        chunks=(structure_chunk,), **comp)
        off[0] = 0
        root = self._file.attrs
        root["schema"] = SCHEMA_NAME
        root["schema_version"] = SCHEMA_VERSION
        for k, v in UNITS.items():
            root[k] = v
        root["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        root["uid"] = uuid.uuid4().hex
        root["checksums"] = CHECKSUMS
        defaults = {"level_of_theory": "unknown", "energy_reference": "total energy",
                    "source": "unknown", "source_files": "[]", "stage_names": json.dumps([""]),
                    "element_energies": "{}", "skip_report": json.dumps({"skipped": 0})}
        for k, v in {**defaults, **(attrs or {})}.items():
            root[k] = v if not isinstance(v, (list, dict)) else json.dumps(v)

    # -- appending -----------------------------------------------------------
    def append(self, s: Structure) -> None:
        """Buffer one structure (written in blocks of ~``flush_atoms`` atoms).

        Raises:
            DataError: if its optional fields differ from the shard's.
        """
        if s.optional_fields() != self.optional:
            raise DataError(self.path, f"structure {self.n_structures + len(self._buffer)}",
                               f"inconsistent fields: has optional fields {sorted(s.optional_fields())}, "
                               f"but this shard stores {sorted(self.optional)}")
        self._buffer.append(s)
        self._buffered_atoms += s.natoms
        if self._buffered_atoms >= self.flush_atoms:
            self.flush()

    def flush(self) -> None:
        """Write buffered structures to the file."""
        if not self._buffer:
            return
        b = self._buffer
        cols = {
            "positions": np.concatenate([s.positions for s in b]),
            "forces": np.concatenate([s.forces for s in b]),
            "atomic_numbers": np.concatenate([s.atomic_numbers for s in b]),
            "natoms": np.array([s.natoms for s in b]),
            "energy": np.array([s.energy for s in b], dtype=np.float64),
            "cell": np.stack([s.cell for s in b]),
            "pbc": np.stack([s.pbc for s in b]),
            "trajectory_id": np.array([s.trajectory_id for s in b], dtype=np.int64),
            "frame_id": np.array([s.frame_id for s in b], dtype=np.int64),
            "stage": np.array([s.stage for s in b], dtype=np.uint8),
        }
        for name in self.optional:
            cols[name] = (np.concatenate if FIELD_BY_NAME[name].per_atom else np.stack)([getattr(s, name) for s in b])
        self._buffer = []
        self._buffered_atoms = 0
        self._write(cols)

    def append_arrays(self, **cols: np.ndarray) -> None:
        """Append many structures at once from columnar arrays (fast path).

        Required keys: ``positions`` (A, 3), ``forces`` (A, 3),
        ``atomic_numbers`` (A,), ``natoms`` (S,), ``energy`` (S,). Optional:
        ``cell`` (S, 3, 3) (default zeros), ``pbc`` (S, 3) (default False),
        ``trajectory_id`` (S,) (default: the structure index), ``frame_id``,
        ``stage`` (default 0) and the shard's optional fields. Values are
        written as given (no per-structure checks beyond shapes).
        """
        self.flush()
        natoms = np.asarray(cols["natoms"])
        s = len(natoms)
        cols.setdefault("cell", np.zeros((s, 3, 3)))
        cols.setdefault("pbc", np.zeros((s, 3), bool))
        cols.setdefault("trajectory_id", np.arange(self.n_structures, self.n_structures + s))
        cols.setdefault("frame_id", np.zeros(s, np.int64))
        cols.setdefault("stage", np.zeros(s, np.uint8))
        missing = {f.name for f in self.fields} - set(cols)
        extra = set(cols) - {f.name for f in self.fields}
        if missing or extra:
            raise ValueError(f"append_arrays: missing {sorted(missing)}, unexpected {sorted(extra)}")
        a = int(natoms.sum())
        for f in self.fields:
            want = (a if f.per_atom else s, *f.shape)
            if np.shape(cols[f.name]) != want:
                raise ValueError(f"append_arrays: {f.name} has shape {np.shape(cols[f.name])}, expected {want}")
        self._write(cols)

    def _write(self, cols: dict) -> None:
        natoms = np.asarray(cols["natoms"], dtype=np.int64)
        s, a = len(natoms), int(natoms.sum())
        s0, a0 = self.n_structures, self.n_atoms
        for f in self.fields:
            ds = self._file[f.name]
            start = a0 if f.per_atom else s0
            ds.resize(start + (a if f.per_atom else s), axis=0)
            ds[start:] = np.asarray(cols[f.name], dtype=f.dtype)
        off = self._file[OFFSETS]
        off.resize(s0 + s + 1, axis=0)
        off[s0 + 1:] = a0 + np.cumsum(natoms)
        self._elements[np.unique(np.asarray(cols["atomic_numbers"]))] = True
        self.n_structures += s
        self.n_atoms += a

    # -- finishing -----------------------------------------------------------
    def finish(self, **attrs) -> Path:
        """Flush, store final attributes and close; the file is still the temporary :attr:`tmp`.

        Returns the temporary path (splits may be added before :meth:`commit`).
        """
        self.flush()
        root = self._file.attrs
        root["n_structures"] = self.n_structures
        root["n_atoms"] = self.n_atoms
        root["elements"] = np.flatnonzero(self._elements).astype(np.int64)
        for k, v in attrs.items():
            root[k] = v if not isinstance(v, (list, dict)) else json.dumps(v)
        root[ATTRS_DIGEST] = attrs_digest(dict(root.items()))
        self._file.close()
        return self.tmp

    def commit(self) -> Path:
        """Flush the finished temporary file to disk and rename it to its final name."""
        if self._file.id.valid:
            self.finish()
        self._rename.close()
        self._committed = True
        return self.path

    def close(self, **attrs) -> Path:
        """:meth:`finish` then :meth:`commit`; returns the final path."""
        self.finish(**attrs)
        return self.commit()

    def abort(self) -> None:
        """Close and delete the temporary file (nothing under the final name)."""
        try:
            if self._file.id.valid:
                self._file.close()
        finally:
            aborted = RuntimeError("ShardWriter aborted")
            self._rename.__exit__(RuntimeError, aborted, None)  # deletes the temporary file

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self._committed:
                self.close()
        else:
            self.abort()
