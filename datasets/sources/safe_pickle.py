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
"""

from __future__ import annotations

import io
import pickle
import types

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


def _restricted_load(f, **kwargs):
    return RestrictedUnpickler(f, **kwargs).load()


# torch.load's legacy reader takes a pickle module; this one only has the restricted unpickler.
_PICKLE_MODULE = types.SimpleNamespace(Unpickler=RestrictedUnpickler, load=_restricted_load,
                                       __name__="mlip_restricted_pickle")


def _load_storage_from_bytes(b: bytes):
    import torch

    return torch.load(io.BytesIO(b), weights_only=False, pickle_module=_PICKLE_MODULE)


def safe_loads(data: bytes):
    """Unpickle ``data`` allowing only the classes listed in the module docstring.

    Raises:
        pickle.UnpicklingError: for a forbidden global or a corrupt pickle.
    """
    return RestrictedUnpickler(io.BytesIO(data)).load()
