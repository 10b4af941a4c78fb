"""Train/val/test splits by trajectory, stored in a side file next to each shard.

All structures of one trajectory (``trajectory_id``) land in the same split,
so no relaxation or MD trajectory leaks between train and test. Trajectories
are permuted with the seed and cut by count (the first ``round(f0*T)`` go to
train, the next ``round(f1*T)`` to val, the rest to test).

Where splits live. A shard is never opened for writing once committed: the
splits of ``shard.h5`` are in ``shard.h5.splits.json``, written whole under a
temporary name and renamed (:func:`mlip.atomic.atomic_write_text`), so a
killed ``mlip-data split`` leaves each shard's old or new splits, and a reader
always sees one whole file. The side file holds, per split state, one code
per structure (``0`` train, ``1`` val, ``2`` test, ``255`` none; zlib +
base64, with its SHA-256), the shard's ``uid`` (a side file of another shard
is refused), the id of the ``split`` run and the uids of every shard that run
covered, and the state before that run (``previous``). A run killed between
two shards thus leaves shards of the new run next to shards of the old one;
readers of the whole dataset (:func:`mlip.datasets.reader.open_shards`) see
that the new run is incomplete and use every shard's old state.

Shards written before side files (mlip <= 0.x) keep their splits as index
arrays ``splits/<name>`` inside the file; they are read (and validated) when no
side file exists, and ``mlip-data split`` writes a side file for them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlip.atomic import atomic_write_text, output_lock

from .errors import DataError
from .schema import SPLIT_NAMES

SPLITS_FILE_SCHEMA = "mlip.datasets.splits"
SPLITS_FILE_VERSION = 1
NO_SPLIT = 255


def splits_path(shard: str | Path) -> Path:
    """The side file holding the splits of ``shard``: ``<shard>.splits.json``."""
    shard = Path(shard)
    return shard.with_name(shard.name + ".splits.json")


@dataclass
class SplitState:
    """One assignment of a shard's structures to the splits.

    Attributes:
        codes_z: zlib-compressed uint8 code per structure (index into
            :data:`~mlip.datasets.schema.SPLIT_NAMES`, :data:`NO_SPLIT` for none); kept
            compressed so a reader holds ~0.3 byte per structure.
        counts: split name -> structures.
        run: id of the ``split`` run that wrote it (``"in-shard"`` for old shards).
        run_shards: uids of every shard that run covered.
        meta: ``by``, ``fractions``, ``seed``, ``n_trajectories``.
    """

    codes_z: bytes
    counts: dict
    run: str
    run_shards: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_codes(cls, codes: np.ndarray, run: str, run_shards=(), **meta) -> "SplitState":
        """A state from an uint8 ``codes`` array of one code per structure."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        counts = {name: int(np.count_nonzero(codes == k)) for k, name in enumerate(SPLIT_NAMES)}
        return cls(zlib.compress(codes.tobytes(), 6), counts, run, list(run_shards), meta)

    def codes(self) -> np.ndarray:
        """The uint8 code per structure."""
        return np.frombuffer(zlib.decompress(self.codes_z), dtype=np.uint8)

    def indices(self, name: str) -> np.ndarray:
        """Sorted structure indices (int64) of split ``name``."""
        return np.flatnonzero(self.codes() == SPLIT_NAMES.index(name)).astype(np.int64)

    def to_json(self) -> dict:
        """JSON-able form, with the SHA-256 of the codes."""
        return {"run": self.run, "run_shards": self.run_shards, **self.meta, "counts": self.counts,
                "codes": base64.b64encode(self.codes_z).decode("ascii"),
                "sha256": hashlib.sha256(self.codes().tobytes()).hexdigest()}

    @classmethod
    def from_json(cls, d: dict, path, n_structures: int, where: str) -> "SplitState":
        """Decode and verify a state read from a side file.

        Raises:
            DataError: naming ``path`` and ``where`` for a corrupt or mismatched state.
        """
        try:
            codes_z = base64.b64decode(d["codes"], validate=True)
            codes = np.frombuffer(zlib.decompress(codes_z), dtype=np.uint8)
            digest, run = str(d["sha256"]), str(d["run"])
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise DataError(path, where, f"corrupt splits file: cannot decode the split codes ({exc!r})") from None
        if hashlib.sha256(codes.tobytes()).hexdigest() != digest:
            raise DataError(path, where, "checksum mismatch: the split codes do not match their SHA-256 "
                                         "(corrupt file); rerun `mlip-data split`")
        if len(codes) != n_structures:
            raise DataError(path, where, f"bad shape: {len(codes)} split codes for a shard of {n_structures} "
                                         "structures; rerun `mlip-data split`")
        bad = np.flatnonzero((codes >= len(SPLIT_NAMES)) & (codes != NO_SPLIT))
        if len(bad):
            raise DataError(path, where, f"bad value: split code {codes[bad[0]]} at structure {bad[0]}")
        meta = {k: d[k] for k in ("by", "fractions", "seed", "n_trajectories") if k in d}
        return cls.from_codes(codes, run, d.get("run_shards", []), **meta)


def in_shard_state(path, n_structures: int, group) -> SplitState:
    """The splits stored inside an old shard (``splits/<name>`` index arrays), validated.

    Raises:
        DataError: for indices out of range, unsorted or in two splits, naming the file and
            the dataset.
    """
    codes = np.full(n_structures, NO_SPLIT, np.uint8)
    for k, name in enumerate(SPLIT_NAMES):
        if name not in group:
            continue
        where = f"dataset 'splits/{name}'"
        try:
            idx = np.asarray(group[name][:], dtype=np.int64)
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise DataError(path, where, f"cannot read (corrupt file): {exc}") from exc
        if idx.ndim != 1:
            raise DataError(path, where, f"bad shape: {idx.shape}, expected (n,)")
        if len(idx) and (idx.min() < 0 or idx.max() >= n_structures):
            bad = idx[(idx < 0) | (idx >= n_structures)][0]
            raise DataError(path, where, f"index out of range: structure {bad} in a shard of {n_structures}")
        if len(idx) > 1 and np.any(np.diff(idx) <= 0):
            raise DataError(path, where, "bad value: split indices are not sorted and unique")
        clash = idx[codes[idx] != NO_SPLIT]
        if len(clash):
            other = SPLIT_NAMES[codes[clash[0]]]
            raise DataError(path, where, f"overlapping splits: structure {clash[0]} is in both {other!r} and {name!r}")
        codes[idx] = k
    meta = {}
    try:
        meta = {k: (v.item() if hasattr(v, "item") else v) for k, v in group.attrs.items()}
    except (OSError, RuntimeError, KeyError, ValueError, TypeError):
        pass
    present = [n for n in SPLIT_NAMES if n in group]
    state = SplitState.from_codes(codes, f"in-shard:{meta.get('seed')}:{meta.get('fractions')}", (), **meta)
    state.counts = {n: state.counts[n] for n in present}
    return state


def read_splits_file(path: Path, shard_uid: str, n_structures: int) -> tuple[SplitState, SplitState | None]:
    """``(current, previous)`` split states of a side file, verified against its shard.

    Raises:
        FileNotFoundError: no side file.
        DataError: naming the side file, for a corrupt file or one of another shard.
    """
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, "", f"corrupt splits file: not JSON ({exc}); rerun `mlip-data split`") from None
    if not isinstance(d, dict) or d.get("schema") != SPLITS_FILE_SCHEMA:
        raise DataError(path, "", f"not an mlip splits file (schema={d.get('schema') if isinstance(d, dict) else d!r})")
    if int(d.get("version", -1)) > SPLITS_FILE_VERSION:
        raise DataError(path, "", f"unsupported splits file version {d.get('version')}; this mlip reads 1")
    if d.get("shard_uid") != shard_uid:
        raise DataError(path, "", f"splits file of another shard (uid {d.get('shard_uid')}, the shard has "
                                  f"{shard_uid}): was the shard replaced? rerun `mlip-data split`")
    if not isinstance(d.get("current"), dict):
        raise DataError(path, "current", "corrupt splits file: no current state")
    current = SplitState.from_json(d["current"], path, n_structures, "current")
    previous = None
    if isinstance(d.get("previous"), dict):
        previous = SplitState.from_json(d["previous"], path, n_structures, "previous")
    return current, previous


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


def lock_target(shard: str | Path) -> Path:
    """The output a shard belongs to, whose :func:`mlip.atomic.output_lock` guards it: the
    shard directory when it holds a manifest, else the shard file itself."""
    from .manifest import MANIFEST

    shard = Path(shard)
    return shard.parent if (shard.parent / MANIFEST).exists() else shard


def split_shards(paths: list[str | Path], fractions=(0.8, 0.1, 0.1), seed: int = 0, by: str = "trajectory") -> dict:
    """Compute splits over all shards and write each shard's side file (module docstring).

    Holds the output lock of the dataset (:func:`lock_target`) meanwhile: a concurrent
    ``convert`` or ``split`` of the same output fails with
    :class:`~mlip.errors.OutputLockedError`. The shards themselves are only read.

    Returns:
        split name -> number of structures.
    """
    import contextlib

    with contextlib.ExitStack() as stack:
        for target in sorted({lock_target(p) for p in paths}):
            stack.enter_context(output_lock(target, what="writing (converting or splitting)"))
        return write_splits(paths, fractions, seed, by)


def write_splits(paths, fractions=(0.8, 0.1, 0.1), seed: int = 0, by: str = "trajectory") -> dict:
    """:func:`split_shards` without taking the lock (for a caller that holds it)."""
    from .reader import ShardReader, check_duplicates, resolve_split_states

    if by != "trajectory":
        raise ValueError(f"splits are made by trajectory only (never by frame); got by={by!r}")
    fr = check_fractions(fractions)
    readers = [ShardReader(p) for p in paths]
    check_duplicates(readers)
    old = resolve_split_states(readers, strict=False)
    try:
        trajectories = [np.concatenate([b.arrays["trajectory_id"] for b in r.iter_blocks(("trajectory_id",))])
                        if r.n_structures else np.zeros(0, np.int64) for r in readers]
    finally:
        for r in readers:
            r.close()
    ids = np.unique(np.concatenate(trajectories)) if trajectories else np.zeros(0, np.int64)
    ids, code = assign_trajectories(ids, fr, seed)
    run, uids = secrets.token_hex(8), [r.uid for r in readers]
    counts = dict.fromkeys(SPLIT_NAMES, 0)
    for r, traj, previous in zip(readers, trajectories, old):
        state = SplitState.from_codes(code[np.searchsorted(ids, traj)], run, uids, by=by, fractions=list(fr),
                                      seed=int(seed), n_trajectories=int(len(ids)))
        for k, v in state.counts.items():
            counts[k] += v
        doc = {"schema": SPLITS_FILE_SCHEMA, "version": SPLITS_FILE_VERSION, "shard": r.path.name,
               "shard_uid": r.uid, "n_structures": r.n_structures, "current": state.to_json(),
               "previous": previous.to_json() if previous is not None else None}
        try:
            atomic_write_text(splits_path(r.path), json.dumps(doc))
        except OSError as exc:
            raise DataError(splits_path(r.path), "", f"cannot write splits: {exc}") from exc
    return counts
