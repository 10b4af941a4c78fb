"""Keep freed CPU tensor memory in the process instead of handing it back to the OS.

Why: glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB at start, adapting
up to 32 MiB) with fresh ``mmap`` pages and unmaps them on ``free``; it also trims the top
of the heap once more than the trim threshold is free there. A potential's energy + forces
allocates and frees hundreds of tensors of 0.1-10 MB per call, so every call pays a page
fault per 4 KiB page touched again, thousands of faults per call. With a fixed 32 MiB mmap
threshold and a 1 GiB trim threshold, blocks are reused from the heap and the faults almost
go away. Measurements (faults per call, their share of the time): ``benchmarks/README.md``,
section "CPU allocator"; ``tests/mlip/test_allocator.py`` checks the effect.

The cost: the process keeps its peak heap (up to 1 GiB of free memory above what is live)
instead of returning it between calls. That suits a process that runs one model call after
another (MD, training), so ``mlip-md`` and ``mlip-train`` call :func:`tune_cpu_allocator`
at start (``--no-tune-allocator`` turns it off). A library never does it behind the user's
back: scripts call it themselves, or set :func:`allocator_env` in a child's environment
(glibc reads the same settings from ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``).
On systems without glibc (macOS, Windows, musl) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["tune_cpu_allocator", "allocator_env", "add_cli_flag", "tune_from_cli", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

_NO_TUNE_HELP = ("keep glibc malloc's default of returning freed memory to the OS (by default large freed "
                "blocks are kept and reused: no page faults per step, but the process keeps its peak heap; "
                "see mlip.allocator)")

#: blocks below this (bytes) come from the heap and are reused (glibc's default ceiling of its
#: adaptive threshold on 64-bit systems, 32 MiB)
MMAP_THRESHOLD = 32 * 1024 * 1024
#: free memory (bytes) the heap keeps at its top before it is returned to the OS
TRIM_THRESHOLD = 1024 * 1024 * 1024

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_cpu_allocator(*, mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process (bytes; see the module doc).

    Returns True if both were set, False where the C library is not glibc (nothing changed).
    Raises ``ValueError`` for a threshold that does not fit a C ``int`` or that glibc refuses.
    """
    for name, v in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not isinstance(v, int) or not 0 < v < 2**31:
            raise ValueError(f"{name} must be a positive int below 2**31 bytes, got {v!r}")
    libc = _glibc()
    if libc is None:
        return False
    if libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold)) != 1:
        raise ValueError(f"glibc refused mmap_threshold={mmap_threshold}")
    if libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold)) != 1:
        raise ValueError(f"glibc refused trim_threshold={trim_threshold}")
    return True


def allocator_env() -> dict[str, str]:
    """The same settings as environment variables, for a child process (glibc reads them at
    start; other C libraries ignore them)."""
    return {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def add_cli_flag(parser) -> None:
    """Add the ``--no-tune-allocator`` flag to an ``argparse`` parser (the CLIs that run one
    model call after another: ``mlip-md``, ``mlip-train fit`` and ``demo``)."""
    parser.add_argument("--no-tune-allocator", action="store_true", help=_NO_TUNE_HELP)


def tune_from_cli(args, device="cpu") -> bool:
    """:func:`tune_cpu_allocator` unless ``args.no_tune_allocator`` (see :func:`add_cli_flag`) or
    the model runs on ``device`` other than the CPU (a CUDA run's tensors are not malloc's:
    the tuning would only keep host memory); returns whether the settings were applied."""
    if args.no_tune_allocator or str(device).split(":")[0] != "cpu":
        return False
    return tune_cpu_allocator()
