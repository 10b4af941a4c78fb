"""Restricted unpickling of source records (never a plain ``pickle.loads``).

Source LMDBs (PubChemQCR, OC20, OC22) store pickles, and a plain unpickler
runs whatever code a pickle names. :func:`safe_loads` allows only:

* containers and numbers pickle builds itself (dict, list, tuple, str, ...),
  ``collections.OrderedDict`` and ``_codecs.encode`` (bytes in protocol 2);
* numpy arrays, dtypes and scalars (``numpy.ndarray``, ``numpy.dtype``,
  ``numpy[._]core.multiarray._reconstruct`` / ``scalar``,
  ``numpy[._]core.numeric._frombuffer``);
* torch tensors: ``torch._utils._rebuild_tensor[_v2]``, and
  ``torch.storage._load_from_bytes``, which is replaced by a loader that runs
  torch's legacy storage reader with this same restricted unpickler (the
  original calls ``torch.load(weights_only=False)``);
* torch-geometric ``Data`` and its internals (``DataEdgeAttr``,
  ``DataTensorAttr``, ``GlobalStorage``, ``NodeStorage``, ``EdgeStorage``).

Any other global raises :class:`pickle.UnpicklingError` naming it.

Sizes are bounded before anything is allocated: the tensor storages of a
pickle may hold at most as many bytes as the pickle itself (a storage's data
travel inside it, so a larger declared size is a lie that would make torch
allocate it before finding out), and :func:`gunzip_bounded` stops
decompressing at a limit (default :data:`MAX_DECOMPRESSED`) instead of
inflating a small value without end.
"""

from __future__ import annotations

import io
import pickle
import threading
import types
import zlib

MAX_DECOMPRESSED = 256 << 20
"""Default limit (bytes) of one decompressed source value: a PubChemQCR record (every stage of
one molecule) is a few MB; a value inflating past this is refused as a decompression bomb."""

_ALLOWED = {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "scalar"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch_geometric.data.data", "Data"),
    ("torch_geometric.data.data", "DataEdgeAttr"),
    ("torch_geometric.data.data", "DataTensorAttr"),
    ("torch_geometric.data.storage", "GlobalStorage"),
    ("torch_geometric.data.storage", "NodeStorage"),
    ("torch_geometric.data.storage", "EdgeStorage"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals (module docstring)."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _load_storage_from_bytes
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name} (not in the allow-list)")


_BUDGET = threading.local()  # bytes of tensor storage the pickle being loaded may still declare


class _StorageUnpickler(RestrictedUnpickler):
    """The restricted unpickler for torch's legacy storage reader: every storage it declares
    (``persistent_load`` of a ``("storage", type, key, location, numel, view)`` id) is checked
    against the bytes it was read from and the whole pickle's budget before torch allocates it."""

    limit = 0  # bytes of the storage blob being read

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._torch_persistent_load = None

    def __setattr__(self, name, value):
        if name == "persistent_load":  # torch sets its loader on the instance: keep it behind ours
            name = "_torch_persistent_load"
        object.__setattr__(self, name, value)

    def persistent_load(self, saved_id):
        if self._torch_persistent_load is None:
            raise pickle.UnpicklingError("persistent id in a pickle that declares none")
        if isinstance(saved_id, tuple) and len(saved_id) == 6 and saved_id[0] in ("storage", b"storage"):
            numel, dtype = saved_id[4], getattr(saved_id[1], "dtype", None)
            if not isinstance(numel, int) or numel < 0 or dtype is None:
                raise pickle.UnpicklingError(f"corrupt tensor storage id {saved_id!r}")
            nbytes = numel * dtype.itemsize
            left = getattr(_BUDGET, "left", 0)
            if nbytes > min(self.limit, left):
                raise pickle.UnpicklingError(
                    f"tensor storage declares {nbytes:,} bytes ({numel:,} x {dtype}) but its pickle holds "
                    f"{self.limit:,} (at most {left:,} left for this record): refusing to allocate it")
            _BUDGET.left = left - nbytes
        return self._torch_persistent_load(saved_id)


def _load_storage_from_bytes(b: bytes):
    import torch

    unpickler = type("_BoundedStorageUnpickler", (_StorageUnpickler,), {"limit": len(b)})
    module = types.SimpleNamespace(Unpickler=unpickler, load=lambda f, **kw: unpickler(f, **kw).load(),
                                   __name__="mlip_restricted_pickle")
    return torch.load(io.BytesIO(b), weights_only=False, pickle_module=module)


def safe_loads(data: bytes, *, max_tensor_bytes: int | None = None):
    """Unpickle ``data`` allowing only the classes listed in the module docstring.

    Args:
        max_tensor_bytes: total bytes all tensor storages of the pickle may declare (default:
            ``len(data)``, since their data travel inside the pickle). A caller that knows the
            record's atom count may pass a tighter bound.

    Raises:
        pickle.UnpicklingError: for a forbidden global, a storage larger than allowed (before
            it is allocated) or a corrupt pickle.
    """
    outer = getattr(_BUDGET, "left", None)
    _BUDGET.left = len(data) if max_tensor_bytes is None else int(max_tensor_bytes)
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    finally:
        _BUDGET.left = outer


class DecompressionLimitError(ValueError):
    """A compressed value inflates past the allowed size (a decompression bomb or a corrupt value)."""


def gunzip_bounded(data: bytes, limit: int = MAX_DECOMPRESSED) -> bytes:
    """``gzip.decompress(data)`` that stops at ``limit`` bytes of output.

    Memory stays below ``limit`` plus one step (1 MiB) whatever ``data`` holds. Concatenated
    gzip members are decompressed in turn, as ``gzip.decompress`` does; zlib data (no gzip
    header) are accepted too.

    Raises:
        DecompressionLimitError: the output would exceed ``limit`` (a ``ValueError``).
        zlib.error, EOFError: not gzip/zlib data, or truncated.
    """
    out = bytearray()
    rest = memoryview(data)
    while len(rest):
        d = zlib.decompressobj(47)  # 32 + 15: gzip or zlib header, detected
        chunk = rest
        while True:
            room = limit - len(out)
            piece = d.decompress(chunk, min(room, 1 << 20) + 1 if room >= 0 else 1)
            out += piece
            if len(out) > limit:
                raise DecompressionLimitError(
                    f"decompressed value exceeds {limit:,} bytes (from {len(data):,} compressed); "
                    "refused as a decompression bomb")
            if d.eof:
                break
            chunk = d.unconsumed_tail
            if not chunk and not piece:
                raise EOFError("compressed value is truncated (no end of stream)")
        rest = memoryview(d.unused_data)
        if len(rest) and bytes(rest[:2]) != b"\x1f\x8b":
            break  # trailing bytes after the last member (gzip.decompress ignores zero padding)
    return bytes(out)
