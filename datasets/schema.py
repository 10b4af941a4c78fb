"""The on-disk HDF5 layout (schema version 1): ragged arrays, one file per shard.

A shard holds ``S`` structures with ``A`` atoms in total. Per-atom arrays are
concatenated over structures; structure ``i`` owns atom rows
``offsets[i]:offsets[i+1]``. No group per structure.

=================  ===========  =======  ==========================================
dataset            shape        dtype    meaning (units)
=================  ===========  =======  ==========================================
positions          (A, 3)       f32      Cartesian positions, Å
forces             (A, 3)       f32      forces, eV/Å (= -dE/dpos)
atomic_numbers     (A,)         u8       Z
tags               (A,)         u8       optional; OC20 0 sub-surface, 1 surface, 2 adsorbate
fixed              (A,)         u8       optional; 1 = atom held fixed in the source run
offsets            (S+1,)       i64      first atom row of each structure, then A
energy             (S,)         f64      energy, eV (reference given by attr energy_reference)
natoms             (S,)         i32      atoms per structure (= diff(offsets))
cell               (S, 3, 3)    f64      lattice vectors as rows, Å (zeros if none)
pbc                (S, 3)       bool     periodic along each cell vector
stress             (S, 3, 3)    f32      optional; eV/Å^3, ASE sign convention
trajectory_id      (S,)         i64      source trajectory / system (CID, OC20 sid, ...)
frame_id           (S,)         i64      step inside the trajectory (OC20 fid)
stage              (S,)         u8       index into attr stage_names (PubChemQCR stage)
=================  ===========  =======  ==========================================

Root attributes: ``schema`` (= :data:`SCHEMA_NAME`), ``schema_version``,
``units_energy``/``units_length``/``units_forces``/``units_stress``,
``level_of_theory``, ``energy_reference``, ``source`` (format), ``source_files``
(JSON list), ``stage_names`` (JSON list), ``element_energies`` (JSON, eV, may be
``{}``), ``n_structures``, ``n_atoms``, ``elements`` (sorted Z present),
``skip_report`` (JSON), ``created``, ``uid`` (random, unique per shard: a side
file or a manifest entry names its shard by it, and a copied shard is seen as a
duplicate), ``checksums`` (``"fletcher32"``) and ``attrs_sha256`` (SHA-256 of
all other root attributes, :func:`attrs_digest`).

Integrity: every dataset carries HDF5's fletcher32 checksum per chunk,
verified by HDF5 on every read; HDF5's own metadata (object headers, chunk
indexes) carries checksums in this file format, and the root attributes,
kept by HDF5 in an unchecked heap, are covered by ``attrs_sha256``. Shards
written before checksums (no ``checksums`` attribute) stay readable;
``mlip-data info`` says that their corruption would go unnoticed.

Splits are not stored in the shard (a committed shard is never opened for
writing) but in ``<shard>.splits.json`` (:mod:`mlip.datasets.splits`); shards
of older versions hold them as ``splits/<name>`` (n,) i64 sorted index arrays,
still read.

Per-atom arrays are chunked by :data:`ATOM_CHUNK` rows, per-structure arrays
by :data:`STRUCTURE_CHUNK` rows, uncompressed by default: lzf / gzip save only
15-25 % on float data, and gzip makes per-structure reads ~4x slower
(benchmarks/README.md; block streaming barely notices either).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

SCHEMA_NAME = "mlip.datasets.ragged"
SCHEMA_VERSION = 1
ATOM_CHUNK = 4096
STRUCTURE_CHUNK = 1024
SPLITS_GROUP = "splits"
SPLIT_NAMES = ("train", "val", "test")
OFFSETS = "offsets"
CHECKSUMS = "fletcher32"
ATTRS_DIGEST = "attrs_sha256"

UNITS = {
    "units_energy": "eV",
    "units_length": "Angstrom",
    "units_forces": "eV/Angstrom",
    "units_stress": "eV/Angstrom^3",
}


@dataclass(frozen=True)
class Field:
    """One dataset of the schema.

    Attributes:
        name: dataset name in the file.
        per_atom: True for (A, ...) arrays, False for (S, ...) arrays.
        dtype: numpy dtype on disk.
        shape: trailing shape after the first axis.
        required: False for optional datasets (present or absent per shard).
    """

    name: str
    per_atom: bool
    dtype: np.dtype
    shape: tuple
    required: bool = True


FIELDS: tuple[Field, ...] = (
    Field("positions", True, np.dtype(np.float32), (3,)),
    Field("forces", True, np.dtype(np.float32), (3,)),
    Field("atomic_numbers", True, np.dtype(np.uint8), ()),
    Field("tags", True, np.dtype(np.uint8), (), required=False),
    Field("fixed", True, np.dtype(np.uint8), (), required=False),
    Field("energy", False, np.dtype(np.float64), ()),
    Field("natoms", False, np.dtype(np.int32), ()),
    Field("cell", False, np.dtype(np.float64), (3, 3)),
    Field("pbc", False, np.dtype(np.bool_), (3,)),
    Field("stress", False, np.dtype(np.float32), (3, 3), required=False),
    Field("trajectory_id", False, np.dtype(np.int64), ()),
    Field("frame_id", False, np.dtype(np.int64), ()),
    Field("stage", False, np.dtype(np.uint8), ()),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}
OPTIONAL_FIELDS = tuple(f.name for f in FIELDS if not f.required)


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def attrs_digest(attrs) -> str:
    """SHA-256 of root attributes (a mapping; :data:`ATTRS_DIGEST` itself left out), over their
    canonical JSON, so the same values give the same digest whatever their numpy types."""
    plain = {str(k): _plain(v) for k, v in attrs.items() if k != ATTRS_DIGEST}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()
