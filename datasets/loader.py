"""Batches collated in DataLoader workers and sent to the main process as numpy arrays.

torch's DataLoader moves every tensor a worker returns through its own
shared-memory segment (an fd passed over a socket): for a batch of small
molecules that costs more than reading and collating it. :class:`BatchLoader`
collates in the worker with torch-geometric's ``Batch.from_data_list``, turns
the batch into numpy arrays (pickled by value: one pipe write), and rebuilds
the ``Batch`` in the main process. Measured in benchmarks/README.md.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Batch


def _to_numpy(x):
    if torch.is_tensor(x):
        return x.numpy()
    if isinstance(x, dict):
        return {k: _to_numpy(v) for k, v in x.items()}
    return x


def _to_torch(x):
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, dict):
        return {k: _to_torch(v) for k, v in x.items()}
    return x


class _Collate:
    """Picklable collate function: optional per-sample transform, then a Batch."""

    def __init__(self, transform, pack: bool):
        self.transform = transform
        self.pack = pack

    def __call__(self, samples):
        if self.transform is not None:
            samples = [self.transform(s) for s in samples]
        batch = Batch.from_data_list(samples)
        if not self.pack:
            return batch
        meta = {k: _to_numpy(getattr(batch, k)) for k in ("_slice_dict", "_inc_dict") if hasattr(batch, k)}
        return {"data": {k: _to_numpy(v) for k, v in batch._store.items()}, "num_graphs": batch.num_graphs,
                "meta": meta}


def unpack_batch(packed: dict) -> Batch:
    """Rebuild the ``Batch`` a worker packed (tensors share the received buffers)."""
    b = Batch()
    for k, v in packed["data"].items():
        b[k] = _to_torch(v)
    b._num_graphs = packed["num_graphs"]
    for k, v in packed["meta"].items():
        setattr(b, k, _to_torch(v))
    return b


class BatchLoader:
    """Iterate torch-geometric ``Batch`` objects of ``batch_size`` samples.

    Args:
        dataset: a :class:`~mlip.datasets.StreamingDataset` (or any dataset of
            ``Data``; pass ``shuffle=True`` for map-style ones).
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (0: collate in this process).
        transform: optional function ``Data -> Data`` run on each sample in
            the workers before collation (e.g. neighbour-list building).
        **loader_kwargs: passed to ``torch.utils.data.DataLoader``
            (``drop_last``, ``shuffle``, ``persistent_workers``, ...).
    """

    def __init__(self, dataset, batch_size: int, *, num_workers: int = 0, transform=None, **loader_kwargs):
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers,
            collate_fn=_Collate(transform, pack=num_workers > 0), **loader_kwargs)
        self.packed = num_workers > 0

    def __iter__(self):
        for item in self.loader:
            yield unpack_batch(item) if self.packed else item
