"""The manifest of a sharded dataset, and resolving what users pass as paths.

A sharded dataset is a directory with ``shard-00000.h5``, ``shard-00001.h5``,
... and ``manifest.json``::

    {"schema": "mlip.datasets.ragged", "schema_version": 1, "complete": true,
     "format": "pubchemqcr", "options": {...}, "sources": [...],
     "shards": [{"path": "shard-00000.h5", "n_structures": 500000,
                 "n_atoms": 12000000, "cursor": {...}, "skip_report": {...}}],
     "n_structures": ..., "n_atoms": ..., "splits": {"train": ..., ...}}

``cursor`` records the source position after the shard's last record; a
resumed conversion continues from the last completed shard's cursor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mlip.atomic import atomic_write_text

from .errors import DataError
from .schema import SCHEMA_NAME, SCHEMA_VERSION

MANIFEST = "manifest.json"
H5_SUFFIXES = (".h5", ".hdf5")


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"shard-{index:05d}.h5"


def new_manifest(fmt: str, options: dict, sources: list[str]) -> dict:
    """An empty, incomplete manifest for a conversion."""
    return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "complete": False,
            "format": fmt, "options": options, "sources": sources, "shards": []}


def read_manifest(path: str | Path) -> dict:
    """Load ``manifest.json`` (a file or the directory holding it).

    Raises:
        DataError: if it is unreadable or not an mlip manifest.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, "", f"cannot read manifest: {exc}") from exc
    if m.get("schema") != SCHEMA_NAME or not isinstance(m.get("shards"), list):
        raise DataError(path, "", f"not an mlip dataset manifest (schema={m.get('schema')!r})")
    return m


def write_manifest(directory: str | Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (:func:`mlip.atomic.atomic_write_text`)."""
    atomic_write_text(Path(directory) / MANIFEST, json.dumps(manifest, indent=1))


def resolve_paths(paths) -> list[Path]:
    """Turn what users pass into the ordered list of shard files.

    ``paths`` may be an ``.h5`` file, a ``manifest.json``, a directory (its
    manifest if present, else its ``*.h5`` files sorted by name) or a list of
    any of these.

    Raises:
        DataError: for a missing path, an incomplete conversion, or no shards.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            if (p / MANIFEST).exists():
                out += _from_manifest(p / MANIFEST)
            else:
                found = sorted(q for q in p.iterdir() if q.suffix in H5_SUFFIXES)
                if not found:
                    raise DataError(p, "", "no .h5 shards and no manifest.json in directory")
                out += found
        elif p.suffix == ".json":
            out += _from_manifest(p)
        elif p.exists():
            out.append(p)
        else:
            raise DataError(p, "", "no such file or directory")
    if not out:
        raise DataError(str(paths), "", "no dataset files given")
    return out


def _from_manifest(path: Path) -> list[Path]:
    m = read_manifest(path)
    if not m.get("complete", False):
        raise DataError(path, "", "conversion incomplete: rerun `mlip-data convert ... --resume` to finish it")
    return [path.parent / s["path"] for s in m["shards"]]
