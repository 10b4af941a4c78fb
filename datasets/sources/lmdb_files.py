"""Opening and walking source LMDB files safely.

LMDB maps the file into memory; reading a page past the end of a truncated
file would kill the process with SIGBUS. :func:`open_lmdb` therefore compares
the file size with the page count the LMDB header claims before any read.

The ``lmdb`` package is an optional extra (``pip install 'mlip[lmdb]'``), imported only
when an LMDB file is opened (:func:`import_lmdb`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import DataError

if TYPE_CHECKING:
    import lmdb

LMDB_MISSING = "LMDB files need the lmdb package: pip install 'mlip[lmdb]'"


def import_lmdb():
    """The ``lmdb`` module.

    Raises:
        ImportError: naming the extra to install when ``lmdb`` is missing.
    """
    try:
        import lmdb
    except ImportError as exc:
        raise ImportError(LMDB_MISSING) from exc
    return lmdb


def open_lmdb(path: str | Path) -> lmdb.Environment:
    """Open an LMDB file (or a directory holding ``data.mdb``) read-only, lock-free.

    Raises:
        DataError (fatal): if it is not an LMDB file, or is truncated.
        ImportError: if the ``lmdb`` extra is not installed.
    """
    lmdb = import_lmdb()
    path = Path(path)
    subdir = path.is_dir()
    data_file = path / "data.mdb" if subdir else path
    try:
        env = lmdb.open(str(path), subdir=subdir, readonly=True, lock=False, readahead=False,
                        meminit=False, max_readers=1)
    except lmdb.Error as exc:
        raise DataError(path, "", f"not a readable LMDB file (corrupt or wrong format): {exc}", fatal=True) from exc
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    have = os.path.getsize(data_file)
    if have < need:
        env.close()
        raise DataError(path, "", f"truncated LMDB file: header needs {need} bytes, file has {have}", fatal=True)
    return env


def is_integer_key(key: bytes) -> bool:
    """True for a key that is an ASCII decimal integer (``b"0"``, ``b"117"``, ``b"000015111"``)."""
    return key.isdigit()


def iter_lmdb(path: Path, state: dict | None, skip_keys=(), *, order: str = "byte",
              info: dict | None = None) -> Iterator[tuple[int, bytes, bytes]]:
    """``(n, key, value)`` for the entries of an LMDB file.

    ``order="byte"`` walks the keys in LMDB's byte order (``b"0", b"1", b"10",
    b"100", b"11"``...). ``order="numeric"`` walks them by integer value when
    every key (``skip_keys`` aside) is an ASCII integer, as fairchem indexes
    its LMDBs (``str(i)`` for ``i`` in ``range(length)``), and falls back to
    byte order otherwise. The order used is stored as ``info["key_order"]``
    (``"numeric"`` or ``"byte"``) before the first entry is yielded.

    ``n`` counts entries from the start of the file in that order (skipped keys
    excluded). With ``state`` (a cursor ``{"n": ..., "key": hex}``) reading
    resumes after that key.

    Raises:
        DataError (fatal): if the file cannot be opened or read, or ``state``
            does not match the file.
    """
    lmdb = import_lmdb()
    env = open_lmdb(path)
    n = 0
    try:
        with env.begin(buffers=False) as txn:
            keys = None
            if order == "numeric":
                keys = [k for k in txn.cursor().iternext(keys=True, values=False) if k not in skip_keys]
                if all(is_integer_key(k) for k in keys):
                    keys.sort(key=lambda k: (int(k), k))
                else:
                    keys = None
            if info is not None:
                info["key_order"] = "byte" if keys is None else "numeric"
            if keys is not None:
                yield from _iter_sorted(path, txn, keys, state)
                return
            cur = txn.cursor()
            if state is not None and state.get("key") is not None:
                last = bytes.fromhex(state["key"])
                n = int(state["n"])
                ok = cur.set_range(last)
                if ok and cur.key() == last:
                    ok = cur.next()
            else:
                ok = cur.first()
            while ok:
                key, value = cur.item()
                if key not in skip_keys:
                    n += 1
                    yield n, key, value
                ok = cur.next()
    except lmdb.Error as exc:
        raise DataError(path, f"entry {n}", f"corrupt LMDB file: {exc}", fatal=True) from exc
    finally:
        env.close()


def _iter_sorted(path, txn, keys: list, state: dict | None) -> Iterator[tuple[int, bytes, bytes]]:
    start = 0
    if state is not None and state.get("key") is not None:
        start = int(state["n"])
        if not 0 < start <= len(keys) or keys[start - 1] != bytes.fromhex(state["key"]):
            raise DataError(path, f"entry {start}", "cannot resume: the file's keys differ from those of the "
                                                    "interrupted conversion; rerun with --overwrite", fatal=True)
    for i in range(start, len(keys)):
        value = txn.get(keys[i])
        if value is None:
            raise DataError(path, f"key {keys[i]!r}", "corrupt LMDB file: listed key has no value", fatal=True)
        yield i + 1, keys[i], value
