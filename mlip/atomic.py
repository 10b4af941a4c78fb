"""Atomic file writes: the one way mlip writes a file that someone may read.

Every file is written under a temporary name in its target folder that is unique to the
writing process (``<name>.<pid>.<random>.tmp``), flushed to disk, then renamed over the
target (``os.replace``, atomic on POSIX). A crash at any moment, even SIGKILL, leaves either
the old file or the new one, never a half-written one; two processes writing the same target
never share a temporary file. Temporaries that a killed process left behind are removed by
:func:`remove_stale_temporaries` (their process id is no longer alive).

This module imports nothing but the standard library, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
from pathlib import Path
from typing import IO, Iterator

from .errors import OutputLockedError

__all__ = ["temporary_path", "atomic_path", "atomic_open", "atomic_write_text", "atomic_write_bytes",
           "remove_stale_temporaries", "output_lock", "lock_path", "OutputLockedError"]

_TMP = re.compile(r"^(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{6}\.tmp$")


def temporary_path(path: str | Path) -> Path:
    """A fresh temporary name for ``path`` in the same folder, unique to this process and call."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = True, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on error delete it.

    For writers that need a file name (h5py, ``np.savez``, ``savefig``)::

        with atomic_path("shard.h5") as tmp:
            with h5py.File(tmp, "w") as f:
                ...

    Args:
        fsync: flush the file and its folder to disk before and after the rename, so a power
            loss cannot leave an empty file under the final name.
        mkdir: create the target folder if needed.
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the writer created no file to rename to {path}")
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, fsync: bool = True, **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` for writing (``"w"``, ``"wb"``, with ``newline=`` etc.), atomically."""
    if mode[0] not in "wx":
        raise ValueError(f"atomic_open: mode must start with 'w' or 'x', got {mode!r}")
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, mode.replace("x", "w"), **kwargs) as f:
            yield f


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding=encoding, fsync=fsync) as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete temporaries of :func:`atomic_path` in ``folder`` whose writing process is gone.

    Args:
        name: only temporaries of this target file name (default: any).

    Returns the removed paths. Temporaries of live processes (a concurrent writer) are kept.
    Process ids are those of this machine: on a file system shared between machines, call it
    only where no other machine writes the same folder.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP.match(p.name)
        if not m or (name is not None and m["name"] != name) or _alive(int(m["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            p.unlink()
            removed.append(p)
    return removed


def lock_path(path: str | Path) -> Path:
    """The lock file of output ``path``: ``<path>.lock`` next to it (also for a directory)."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def output_lock(path: str | Path, *, what: str = "writing") -> Iterator[Path]:
    """Hold an exclusive lock on output ``path`` (a file or a directory) for the block.

    The lock is ``fcntl.flock`` on :func:`lock_path` (``<path>.lock``, holding the owner's
    process id), taken without waiting: a second process asking for it gets
    :class:`OutputLockedError` (a ``ValueError``) naming the output and the owner. The kernel
    releases the lock when its process dies, even by SIGKILL, so a killed writer never leaves
    the output locked; the lock file is removed when the block ends. Yields the lock path.

    Locks are advisory (only callers of this function are kept out) and local to one machine
    unless the file system passes ``flock`` on (NFS v4 and Lustre do with the right options).
    """
    path = Path(path)
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            try:
                owner = lock.read_text().strip() or "unknown"
            except OSError:
                owner = "unknown"
            raise OutputLockedError(
                f"{path}: another process (pid {owner}) is {what} this output (lock {lock} is held); "
                "wait for it to finish, or choose another output") from None
        # The holder before us may have removed the file after we opened it: then our lock is
        # on an orphaned inode, and a third process could lock a new file. Retry on the path.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # while still locked: nobody can hold a lock on this inode meanwhile
        os.close(fd)
