"""Map-style dataset: random access to structures of one or more shards."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from .manifest import resolve_paths
from .reader import open_shards
from .samples import block_to_samples


class HDF5Dataset(torch.utils.data.Dataset):
    """Random access by index over shards written by ``mlip-data convert``.

    Args:
        path_or_paths: a shard, a manifest, a directory of shards or a list.
        split: ``None`` for all structures, else ``"train"``, ``"val"`` or
            ``"test"`` (the shards' ``splits/<name>`` index arrays).
        cache_bytes: HDF5 chunk cache per dataset and shard.

    ``ds[i]`` is a torch-geometric ``Data`` with the keys of
    :mod:`mlip.datasets.keys`; ``structure_id`` is the position of the
    structure in the concatenation of all shards (ignoring the split).

    Each access costs one small read per dataset (~0.1-0.3 ms). For training
    over large sets use :class:`~mlip.datasets.StreamingDataset`, which reads
    contiguous blocks. Files are opened lazily and reopened after a fork, so
    the dataset can go to DataLoader workers.
    """

    def __init__(self, path_or_paths, split: str | None = None, *, cache_bytes: int = 16 << 20):
        self.paths = resolve_paths(path_or_paths)
        self.shards = open_shards(self.paths, cache_bytes=cache_bytes)
        self.split = split
        sizes = np.array([s.n_structures for s in self.shards], dtype=np.int64)
        self._first_id = np.concatenate([[0], np.cumsum(sizes)])
        if split is None:
            self._index = None
            self._len = int(sizes.sum())
        else:
            parts = []
            for k, s in enumerate(self.shards):
                parts.append(self._first_id[k] + s.split_indices(split))
                s.close()
            self._index = np.concatenate(parts).astype(np.int64)
            self._len = len(self._index)

    def __len__(self) -> int:
        return self._len

    def structure_id(self, i: int) -> int:
        """Global structure id of item ``i`` (differs from ``i`` with a split)."""
        if not -self._len <= i < self._len:
            raise IndexError(f"index {i} out of range for dataset of length {self._len}")
        i = i % self._len
        return int(i if self._index is None else self._index[i])

    def __getitem__(self, i: int) -> Data:
        gid = self.structure_id(int(i))
        k = int(np.searchsorted(self._first_id, gid, side="right") - 1)
        local = gid - int(self._first_id[k])
        block = self.shards[k].read_block(local, local + 1)
        return block_to_samples(block, gid)[0]

    @property
    def num_atoms(self) -> int:
        """Atoms in all shards (ignoring the split)."""
        return sum(s.n_atoms for s in self.shards)

    def close(self) -> None:
        """Close open file handles (they reopen on the next access)."""
        for s in self.shards:
            s.close()
