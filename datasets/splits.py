"""Train/val/test splits by trajectory, stored as index arrays in each shard.

All structures of one trajectory (``trajectory_id``) land in the same split,
so no relaxation or MD trajectory leaks between train and test. Trajectories
are permuted with the seed and cut by count (the first ``round(f0*T)`` go to
train, the next ``round(f1*T)`` to val, the rest to test).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .errors import DataError
from .reader import open_h5
from .schema import SPLIT_NAMES, SPLITS_GROUP


def check_fractions(fractions) -> tuple[float, ...]:
    """Validate split fractions (one per split name, non-negative, sum 1)."""
    fr = tuple(float(x) for x in fractions)
    if len(fr) != len(SPLIT_NAMES) or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be {len(SPLIT_NAMES)} non-negative numbers summing to 1 "
                         f"({'/'.join(SPLIT_NAMES)}); got {list(fractions)}")
    return fr


def assign_trajectories(trajectory_ids: np.ndarray, fractions, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split unique trajectory ids.

    Args:
        trajectory_ids: (T,) unique sorted int64 ids.
        fractions: train/val/test fractions.
        seed: permutation seed.

    Returns:
        ``(ids, code)``: the sorted ids and, for each, the split index into
        :data:`~mlip.datasets.schema.SPLIT_NAMES`.
    """
    fr = check_fractions(fractions)
    t = len(trajectory_ids)
    perm = np.random.default_rng(seed).permutation(t)
    cuts = np.cumsum([round(f * t) for f in fr[:-1]])
    code = np.empty(t, np.uint8)
    rank = np.empty(t, np.int64)
    rank[perm] = np.arange(t)
    code[:] = np.searchsorted(cuts, rank, side="right")
    return trajectory_ids, code


def split_shards(paths: list[str | Path], fractions=(0.8, 0.1, 0.1), seed: int = 0, by: str = "trajectory") -> dict:
    """Compute splits over all shards and write ``splits/<name>`` into each.

    Writes in place (replacing an earlier split); reads only the
    ``trajectory_id`` arrays, one shard at a time.

    Returns:
        split name -> number of structures.
    """
    if by != "trajectory":
        raise ValueError(f"splits are made by trajectory only (never by frame); got by={by!r}")
    uniq = [np.unique(_trajectory_ids(p)) for p in paths]
    ids = np.unique(np.concatenate(uniq)) if uniq else np.zeros(0, np.int64)
    ids, code = assign_trajectories(ids, fractions, seed)
    counts = dict.fromkeys(SPLIT_NAMES, 0)
    for p in paths:
        traj = _trajectory_ids(p)
        per_structure = code[np.searchsorted(ids, traj)]
        try:
            with h5py.File(p, "r+", locking=False) as f:
                if SPLITS_GROUP in f:
                    del f[SPLITS_GROUP]
                g = f.create_group(SPLITS_GROUP)
                g.attrs["by"] = by
                g.attrs["fractions"] = json.dumps(list(check_fractions(fractions)))
                g.attrs["seed"] = int(seed)
                g.attrs["n_trajectories"] = int(len(ids))
                for k, name in enumerate(SPLIT_NAMES):
                    idx = np.flatnonzero(per_structure == k).astype(np.int64)
                    g.create_dataset(name, data=idx, chunks=(max(1, min(len(idx), 1 << 16)),) if len(idx) else None)
                    counts[name] += len(idx)
        except OSError as exc:
            raise DataError(p, SPLITS_GROUP, f"cannot write splits: {exc}") from exc
    return counts


def _trajectory_ids(path) -> np.ndarray:
    with open_h5(path) as f:
        return f["trajectory_id"][:]
