"""StreamingDataset: exactly-once over ranks x workers, epochs, splits, lazy files, flat memory."""

import gc
import pickle
import time

import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from mlip.datasets import HDF5Dataset, StreamingDataset, keys, split_shards
from mlip.datasets.loader import BatchLoader
from mlip.datasets.testing import write_synthetic_shard


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three shards of different sizes and atom counts, with splits."""
    d = tmp_path_factory.mktemp("shards")
    paths = [write_synthetic_shard(d / f"shard-{i:05d}.h5", n, natoms, seed=i)
             for i, (n, natoms) in enumerate([(1000, 5), (777, 3), (1234, 7)])]
    split_shards(paths, (0.8, 0.1, 0.1), seed=0)
    return d


def _loader_ids(ds, workers, loader=DataLoader):
    # Batches are collated in the workers: sending single samples between processes costs a
    # shared-memory handle per tensor.
    return [i for batch in loader(ds, batch_size=32, num_workers=workers) for i in batch.structure_id.tolist()]


def test_exactly_once_two_ranks_two_workers(shards):
    n = 1000 + 777 + 1234
    per_epoch = []
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            ds = StreamingDataset(shards, rank=rank, world_size=2, block_size=64, shuffle_buffer=100, seed=5)
            ds.set_epoch(epoch)
            assert all(s._file is None for s in ds.shards)  # nothing opened before the fork
            ids = _loader_ids(ds, workers=2, loader=BatchLoader)
            assert all(s._file is None for s in ds.shards)  # workers opened their own handles
            assert abs(len(ids) - n / 2) <= 2 * 64
            seen += ids
        assert sorted(seen) == list(range(n))
        per_epoch.append(seen)
    assert per_epoch[0] != per_epoch[1]  # reshuffled per epoch


def test_same_seed_same_order_and_contract(shards):
    a = StreamingDataset(shards, seed=1, block_size=128)
    b = pickle.loads(pickle.dumps(StreamingDataset(shards, seed=1, block_size=128)))
    ia, ib = [int(d.structure_id) for d in a], [int(d.structure_id) for d in b]
    assert ia == ib and sorted(ia) == list(range(3011))
    assert ia != sorted(ia)
    keys.check_sample(next(iter(a)))
    c = StreamingDataset(shards, shuffle=False)
    assert [int(d.structure_id) for d in c] == list(range(3011))


def test_split_exactly_once(shards):
    val = HDF5Dataset(shards, "val")
    want = [val.structure_id(i) for i in range(len(val))]
    seen = []
    for rank in (0, 1):
        ds = StreamingDataset(shards, split="val", rank=rank, world_size=2, block_size=32)
        seen += _loader_ids(ds, workers=2)
    assert sorted(seen) == sorted(want) and len(seen) == ds.num_structures


def test_streamed_values_equal_written(shards):
    ref = HDF5Dataset(shards)
    rng = np.random.default_rng(0)
    check = set(rng.choice(3011, 200, replace=False).tolist())
    for d in StreamingDataset(shards, block_size=100):
        i = int(d.structure_id)
        if i in check:
            r = ref[i]
            for k in ("pos", "forces", "atomic_numbers", "energy", "cell", "pbc", "trajectory_id", "frame_id"):
                assert torch.equal(d[k], r[k]), k
            check.discard(i)
    assert not check


def test_batch_loader_batches_round_trip(shards):
    ds = StreamingDataset(shards, block_size=100, seed=3)
    direct = {int(d.structure_id): d for d in ds}
    for workers in (0, 2):
        loader = BatchLoader(ds, 50, num_workers=workers, transform=_add_edges)
        seen = 0
        for batch in loader:
            assert batch.num_graphs == len(batch.structure_id) and batch.batch.max() == batch.num_graphs - 1
            for d in batch.to_data_list():
                ref = direct[int(d.structure_id)]
                assert torch.equal(d.pos, ref.pos) and torch.equal(d.energy, ref.energy)
                assert d.edge_index.max() < d.pos.shape[0]  # per-graph indices restored
                seen += 1
        assert seen == 3011


def _add_edges(d):
    n = d.pos.shape[0]
    d.edge_index = torch.stack([torch.arange(n), torch.arange(n).roll(1)])
    return d


def test_rank_from_torch_distributed(shards, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        ds = StreamingDataset(shards)
        assert (ds.rank, ds.world_size) == (0, 1)
        assert StreamingDataset(shards, rank=1, world_size=3).rank == 1
    finally:
        dist.destroy_process_group()
    with pytest.raises(ValueError, match="rank 2 out of range"):
        StreamingDataset(shards, rank=2, world_size=2)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_memory_flat_over_10_million_atoms(tmp_path):
    t0 = time.perf_counter()
    path = write_synthetic_shard(tmp_path / "big.h5", 100_000, natoms=100, block=10_000)
    assert path.stat().st_size > 250e6  # 10M atoms: positions + forces alone are 240 MB
    gc.collect()
    ds = StreamingDataset(path, shuffle_buffer=2048, seed=0)
    samples, n_atoms = [], 0
    it = iter(ds)
    for k, d in enumerate(it):
        n_atoms += d.pos.shape[0]
        if k % 5000 == 0:
            samples.append(_rss_mb())
    assert n_atoms == 10_000_000
    warm = samples[2]  # after the buffer and the first blocks are in
    growth = max(samples[2:]) - warm
    assert growth < 40, f"RSS grew by {growth:.1f} MB while streaming (samples {samples})"
    print(f"RSS MB every 5000 structures: {[round(x) for x in samples]}")
    assert time.perf_counter() - t0 < 90
