"""Iterable dataset that streams shards in chunk-aligned blocks.

Work division: the structures of every shard are cut into blocks of
``block_size`` structures aligned to the per-structure HDF5 chunks. Each epoch
the list of all blocks is permuted with ``(seed, epoch)`` (the same on every
rank), and block ``j`` goes to global worker ``j mod (world_size *
num_workers)`` where the global worker is ``rank * num_workers + worker_id``.
So each structure is seen exactly once per epoch across ranks and workers;
ranks may get up to one block more or less than each other (use a join
context or a fixed step count in DDP).

Shuffling: a worker reads its blocks into a window until the window holds at
least ``shuffle_buffer`` structures, yields the window's structures in random
order, then reads the next window. Blocks are randomly placed in the dataset,
so a window mixes structures from ``shuffle_buffer / block_size`` unrelated
places; raise ``shuffle_buffer`` (or lower ``block_size``) for more mixing.

Memory stays bounded whatever the dataset size: a worker holds one window
(at most ``shuffle_buffer + block_size`` structures) and up to
``max_open_files`` open shards with their split index arrays.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from .manifest import resolve_paths
from .reader import open_shards
from .samples import BlockSamples


def _dist_rank() -> tuple[int, int] | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None


class StreamingDataset(torch.utils.data.IterableDataset):
    """Stream structures from shards, sharded over ranks and DataLoader workers.

    Args:
        paths: a shard, a manifest, a directory of shards, or a list of these.
        split: ``None`` for all structures, else ``"train"``/``"val"``/``"test"``.
        shuffle: permute blocks per epoch and shuffle samples in a buffer.
        shuffle_buffer: structures per shuffle window (per worker).
        seed: base seed; the order depends on ``(seed, epoch)`` only.
        rank, world_size: this process's place among distributed processes;
            by default taken from ``torch.distributed`` if initialised, else
            ``0`` and ``1``.
        block_size: structures per block (default: the shards' per-structure
            chunk length, 1024 for files written by mlip).
        max_open_files: open shards kept per worker.

    Yields torch-geometric ``Data`` with the keys of :mod:`mlip.datasets.keys`.
    With DataLoader workers, batch inside the workers (e.g.
    ``torch_geometric.loader.DataLoader(ds, batch_size=32, num_workers=4)``):
    sending single samples between processes costs one shared-memory handle
    per tensor, about 1-4 ms per sample.
    Files are opened lazily in the process that iterates (never before a
    DataLoader fork). Call :meth:`set_epoch` before each epoch, as with
    ``DistributedSampler``; with ``persistent_workers=True`` the workers keep
    the epoch they started with, so leave that off or recreate the loader.
    All ranks must use the same ``num_workers``.
    """

    def __init__(self, paths, split: str | None = None, *, shuffle: bool = True, shuffle_buffer: int = 4096,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 block_size: int | None = None, max_open_files: int = 8):
        super().__init__()
        self.paths = resolve_paths(paths)
        self.shards = open_shards(self.paths)
        self.split = split
        if split is not None:
            for s in self.shards:
                if split not in s.splits:
                    s.split_indices(split)  # raises a DataError naming the shard
        self.shuffle = shuffle
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.seed = int(seed)
        self.block_size = int(block_size or min(s.structure_chunk for s in self.shards))
        if self.block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.max_open_files = max(1, int(max_open_files))
        self._explicit_rank = (rank, world_size)
        self.rank, self.world_size = self._resolve_rank()
        self.epoch = 0
        sizes = [s.n_structures for s in self.shards]
        self._first_id = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def _resolve_rank(self) -> tuple[int, int]:
        rank, world = self._explicit_rank
        found = _dist_rank()
        if rank is None:
            rank = found[0] if found else 0
        if world is None:
            world = found[1] if found else 1
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} out of range for world_size {world}")
        return int(rank), int(world)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows."""
        self.epoch = int(epoch)
        self.rank, self.world_size = self._resolve_rank()

    @property
    def num_structures(self) -> int:
        """Structures per epoch over all ranks and workers (after the split)."""
        if self.split is None:
            return int(self._first_id[-1])
        return sum(s.splits[self.split] for s in self.shards)

    def blocks(self, epoch: int | None = None) -> list[tuple[int, int, int]]:
        """All ``(shard, start, stop)`` blocks in the order of ``epoch``."""
        out = [(k, a, min(a + self.block_size, s.n_structures))
               for k, s in enumerate(self.shards) for a in range(0, s.n_structures, self.block_size)]
        if self.shuffle:
            epoch = self.epoch if epoch is None else epoch
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(out))
            out = [out[i] for i in perm]
        return out

    def worker_blocks(self, worker: int = 0, num_workers: int = 1) -> list[tuple[int, int, int]]:
        """Blocks this rank's worker ``worker`` of ``num_workers`` reads this epoch."""
        total = self.world_size * num_workers
        return self.blocks()[self.rank * num_workers + worker::total]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        blocks = self._blocks_read(self.worker_blocks(worker, num_workers))
        if not self.shuffle:
            for bs, rows in blocks:
                for i in rows.tolist():
                    yield bs.sample(i)
            return
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        window, count = [], 0
        for bs, rows in blocks:
            window.append((bs, rows))
            count += len(rows)
            if count >= self.shuffle_buffer:
                yield from self._shuffled(window, rng)
                window, count = [], 0
        yield from self._shuffled(window, rng)

    @staticmethod
    def _shuffled(window, rng):
        """The structures of a window of blocks in random order."""
        if not window:
            return
        which = np.concatenate([np.full(len(rows), k) for k, (_, rows) in enumerate(window)])
        row = np.concatenate([rows for _, rows in window])
        perm = rng.permutation(len(row))
        for k, i in zip(which[perm].tolist(), row[perm].tolist()):
            yield window[k][0].sample(i)
        window.clear()  # release the blocks before the next window is read

    def _blocks_read(self, blocks):
        """``(BlockSamples, rows)`` for each block that has structures of the split."""
        held: OrderedDict[int, np.ndarray | None] = OrderedDict()
        try:
            for k, a, b in blocks:
                shard = self.shards[k]
                if k in held:
                    held.move_to_end(k)
                else:
                    held[k] = None if self.split is None else shard.split_indices(self.split)
                    if len(held) > self.max_open_files:
                        old, _ = held.popitem(last=False)
                        self.shards[old].close()
                select = None
                if self.split is not None:
                    idx = held[k]
                    lo, hi = np.searchsorted(idx, [a, b])
                    if lo == hi:
                        continue
                    select = idx[lo:hi] - a
                bs = BlockSamples(shard.read_block(a, b), int(self._first_id[k]) + a)
                yield bs, (np.arange(b - a) if select is None else select)
        finally:
            for k in held:
                self.shards[k].close()
