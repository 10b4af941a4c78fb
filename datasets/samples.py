"""Turn a :class:`~mlip.datasets.reader.Block` into torch-geometric samples.

A block is converted to torch once (:class:`BlockSamples`); a sample is then
a set of slices of the block tensors in a ``Data`` built without its
``__init__`` (see :func:`fast_data`), much cheaper than one h5py read per
structure and field. Measured rates: the data-pipeline section of
``benchmarks/README.md`` (``benchmarks/data.py``).
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch_geometric.data import Data

from . import keys as K
from .reader import Block

_ATOM_KEYS = (("positions", K.POS, None), ("forces", K.FORCES, None),
              ("atomic_numbers", K.ATOMIC_NUMBERS, np.int64), ("tags", K.TAGS, np.int64),
              ("fixed", K.FIXED, np.bool_))
_STRUCT_KEYS = (("energy", K.ENERGY, None), ("cell", K.CELL, None), ("pbc", K.PBC, None),
                ("natoms", K.NATOMS, np.int64), ("stress", K.STRESS, None),
                ("trajectory_id", K.TRAJECTORY_ID, None), ("frame_id", K.FRAME_ID, None),
                ("stage", K.STAGE, np.int64))


def _fast_data_ok() -> bool:
    try:
        from torch_geometric.data.storage import GlobalStorage  # noqa: F401

        d = Data()
        return set(d.__dict__) == {"_tensor_attr_cls", "_edge_attr_cls", "_store"} and \
            set(d._store.__dict__) == {"_mapping", "_parent"}
    except Exception:  # noqa: BLE001 - any surprise: use the public constructor
        return False


_FAST = _fast_data_ok()
if _FAST:
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage


def fast_data(mapping: dict) -> Data:
    """A ``Data`` holding ``mapping`` (key -> tensor; taken over, not copied).

    Fills the internal store directly instead of going through ``Data.__init__``
    per key; falls back to the public constructor if
    this torch_geometric lays out ``Data`` differently than 2.x does.
    """
    if not _FAST:
        return Data(**mapping)
    d = Data.__new__(Data)
    dd = d.__dict__
    dd["_tensor_attr_cls"] = DataTensorAttr
    dd["_edge_attr_cls"] = DataEdgeAttr
    store = GlobalStorage.__new__(GlobalStorage)
    store.__dict__["_mapping"] = mapping
    store.__dict__["_parent"] = weakref.ref(d)
    dd["_store"] = store
    return d


class BlockSamples:
    """Torch views of one block, from which samples are cut on demand.

    Args:
        block: structures ``block.start:block.stop`` of a shard.
        first_id: ``structure_id`` of the block's first structure.
    """

    __slots__ = ("atom", "struct", "offsets", "first_id", "n")

    def __init__(self, block: Block, first_id: int):
        self.atom = [(dst, torch.from_numpy(arr if cast is None else arr.astype(cast)))
                     for src, dst, cast in _ATOM_KEYS if (arr := block.arrays.get(src)) is not None]
        self.struct = [(dst, torch.from_numpy(arr if cast is None else arr.astype(cast)))
                       for src, dst, cast in _STRUCT_KEYS if (arr := block.arrays.get(src)) is not None]
        self.n = block.stop - block.start
        self.struct.append((K.STRUCTURE_ID, torch.arange(first_id, first_id + self.n, dtype=torch.int64)))
        self.offsets = block.offsets.tolist()
        self.first_id = first_id

    def __len__(self) -> int:
        return self.n

    def sample(self, i: int) -> Data:
        """The ``Data`` of row ``i`` (keys of :mod:`mlip.datasets.keys`)."""
        a, b = self.offsets[i], self.offsets[i + 1]
        m = {name: t[a:b] for name, t in self.atom}
        for name, t in self.struct:
            m[name] = t[i:i + 1]
        return fast_data(m)


def block_to_samples(block: Block, first_id: int, select: np.ndarray | None = None) -> list[Data]:
    """Samples for the structures of a block (all, or the rows in ``select``)."""
    bs = BlockSamples(block, first_id)
    rows = range(bs.n) if select is None else select.tolist()
    return [bs.sample(i) for i in rows]
