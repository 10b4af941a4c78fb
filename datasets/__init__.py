"""mlip.datasets: source files -> ragged HDF5 shards -> streamed samples.

Public API:

* :class:`HDF5Dataset` - map-style random access.
* :class:`StreamingDataset` - rank/worker-sharded, shuffled, bounded-memory stream.
* :class:`BatchLoader` - batches collated in DataLoader workers, sent as numpy arrays.
* :func:`convert` - source files to shards (also ``mlip-data convert``).
* :func:`dataset_info`, :func:`split_shards`, :func:`resolve_paths`.
* :func:`composition_stats` (:class:`CompositionStats`) - element counts and energies of a
  split: the elements present and the normal equations of the E0 least-squares fit.
* :class:`ShardWriter`, :class:`ShardReader`, :class:`Structure` - the schema's writer / reader.
* :class:`~mlip.errors.DataError` (a ``ValueError``), :class:`SkipReport`.
* :mod:`~mlip.datasets.keys` - the sample contract (names, shapes, dtypes, units);
  :mod:`~mlip.datasets.schema` - the on-disk layout.

Units everywhere: eV, Å, eV/Å, eV/Å^3. This package imports no model code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# eager: the function ``convert`` shares its name with its module, and a later first import of
# the module would otherwise rebind ``mlip.datasets.convert`` to the module (no torch_geometric)
from .convert import ConversionResult, convert

if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ imports on first use
    from . import keys, schema
    from .errors import DataError, SkipReport
    from .hdf5_dataset import HDF5Dataset
    from .info import CompositionStats, composition_stats, dataset_info
    from .loader import BatchLoader
    from .manifest import resolve_paths
    from .reader import Block, ShardReader
    from .splits import split_shards
    from .streaming import StreamingDataset
    from .structure import Structure
    from .writer import ShardWriter

# Imported lazily (PEP 562): ``mlip-data --help``, ``info`` and ``convert`` never pull in
# torch_geometric (and through it torch._dynamo), which only the sample / batch classes need.
_EXPORTS = {
    "keys": None, "schema": None,
    "DataError": "errors", "SkipReport": "errors",
    "HDF5Dataset": "hdf5_dataset",
    "CompositionStats": "info", "composition_stats": "info", "dataset_info": "info",
    "BatchLoader": "loader",
    "resolve_paths": "manifest",
    "Block": "reader", "ShardReader": "reader",
    "split_shards": "splits",
    "StreamingDataset": "streaming",
    "Structure": "structure",
    "ShardWriter": "writer",
}

__all__ = [
    "BatchLoader", "Block", "CompositionStats", "ConversionResult", "DataError", "HDF5Dataset", "ShardReader",
    "ShardWriter", "SkipReport", "StreamingDataset", "Structure", "composition_stats", "convert", "dataset_info",
    "keys", "resolve_paths", "schema", "split_shards",
]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(f"{__name__}.{_EXPORTS[name] or name}")
        value = module if _EXPORTS[name] is None else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
