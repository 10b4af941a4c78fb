"""mlip.atomic: a reader sees the old file or the new one, never a half-written one."""

import os
import signal
import subprocess
import sys
import time

import pytest

from mlip.atomic import (
    OutputLockedError,
    atomic_open,
    atomic_path,
    atomic_write_text,
    lock_path,
    output_lock,
    remove_stale_temporaries,
    temporary_path,
)


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_error_keeps_the_old_file_and_deletes_the_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_writer_that_creates_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="created no file"):
        with atomic_path(tmp_path / "a.h5"):
            pass
    assert not (tmp_path / "a.h5").exists()


def test_temporary_names_are_unique_per_process_and_call(tmp_path):
    names = {temporary_path(tmp_path / "x.h5").name for _ in range(50)}
    assert len(names) == 50 and all(n.startswith(f"x.h5.{os.getpid()}.") and n.endswith(".tmp") for n in names)
    other = subprocess.run([sys.executable, "-c", f"from mlip.atomic import temporary_path; "
                            f"print(temporary_path({str(tmp_path / 'x.h5')!r}).name)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other.split(".")[2] != str(os.getpid())


_SLOW_WRITER = """
import sys, time
from mlip.atomic import atomic_open
with atomic_open(sys.argv[1], "w") as f:
    f.write("partial new content")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def test_sigkill_mid_write_leaves_the_old_file_and_a_stale_temporary_that_is_removed(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")
    p = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert target.read_text() == "old"
    stale = [q for q in tmp_path.iterdir() if q.name != "model.pt"]
    assert len(stale) == 1 and stale[0].name.startswith(f"model.pt.{p.pid}.")
    # a live writer's temporary is kept, the dead one's removed
    live = temporary_path(target)
    live.write_text("in progress")
    time.sleep(0.01)
    assert remove_stale_temporaries(tmp_path, "model.pt") == stale
    assert live.exists() and not stale[0].exists()


_LOCK_HOLDER = """
import sys, time
from mlip.atomic import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_output_lock_refuses_a_second_process_and_is_freed_by_sigkill(tmp_path):
    out = tmp_path / "shards"
    p = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=rf"{out}: another process \(pid {p.pid}\) is writing"):
            with output_lock(out):
                pass
        assert isinstance(OutputLockedError("x"), ValueError)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    # the kernel released the dead holder's lock: the output can be locked again, and the lock
    # file goes away with the block
    with output_lock(out) as lock:
        assert lock == lock_path(out) == tmp_path / "shards.lock"
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(OutputLockedError):  # also a second holder in the same process
            with output_lock(out):
                pass
    assert not lock_path(out).exists()
