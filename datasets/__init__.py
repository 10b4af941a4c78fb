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

from . import keys, schema
from .convert import ConversionResult, convert
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

__all__ = [
    "BatchLoader", "Block", "CompositionStats", "ConversionResult", "DataError", "HDF5Dataset", "ShardReader",
    "ShardWriter", "SkipReport", "StreamingDataset", "Structure", "composition_stats", "convert", "dataset_info",
    "keys", "resolve_paths", "schema", "split_shards",
]
