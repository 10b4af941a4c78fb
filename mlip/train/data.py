"""Training data: resolve paths (extxyz -> cached HDF5), scan statistics, graph batches.

* :func:`resolve_dataset` turns what a config names into HDF5 shard paths; an extxyz file
  is converted once into ``cache_dir`` (keyed by its path, size, modification time and the
  conversion options), so later runs reuse it.
* :func:`scan` (:func:`mlip.datasets.composition_stats`) reads the atomic numbers and
  energies of a split from the shards (no graphs): elements present, and the reference
  energies E0 of :func:`compute_e0s` (least squares :func:`fit_e0s`, :func:`average_e0s`, or
  :func:`isolated_e0s` from isolated atoms in the data).
* :class:`GraphTransform` turns a dataset sample into a model graph with its targets.
* :class:`BatchStream` is the training stream: deterministic in ``(seed, epoch)``, sharded
  over ranks, with a position ``(epoch, batch)`` that a checkpoint stores and a resumed run
  restores exactly.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from mlip.datasets import BatchLoader, CompositionStats, StreamingDataset, composition_stats, convert, resolve_paths
from mlip.datasets.sources import SourceOptions
from mlip.datasets.sources.extxyz import FORCE_KEYS, is_xyz
from mlip.errors import DataError, OutputExistsError, OutputLockedError
from mlip.graph import build_graph

__all__ = ["DataError", "resolve_dataset", "scan", "fit_e0s", "average_e0s", "isolated_e0s", "compute_e0s",
           "GraphTransform", "BatchStream", "iterate_batches",
           "TARGET_KEYS"]

#: Keys that :class:`GraphTransform` adds to a graph: reference energy [1] eV, forces [N, 3]
#: eV/Å, optional stress [1, 3, 3] eV/Å^3 and the atom count [1].
TARGET_KEYS = ("ref_energy", "ref_forces", "ref_stress", "natoms")


# -- paths --------------------------------------------------------------------------------
def _cache_key(path: Path, options: dict) -> str:
    st = path.stat()
    blob = json.dumps({"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                       "options": options}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_xyz_forces(path: Path, forces_key: str | None) -> None:
    import ase.io

    try:
        atoms = ase.io.read(str(path), index=0)
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds
        raise DataError(path, "", f"cannot read the first frame ({exc})") from None
    keys = [forces_key] if forces_key else list(FORCE_KEYS)
    has = any(k in atoms.arrays for k in keys)
    if not has and atoms.calc is not None:
        has = "forces" in getattr(atoms.calc, "results", {})
    if not has:
        raise DataError(
            path, "", f"frame 0 has no forces (looked for per-atom columns {keys}; it has "
            f"{sorted(atoms.arrays)}). Forces are weighted in the loss (loss.forces_weight > 0) and "
            "the HDF5 schema stores them: give data with forces, or set data.forces_key")


#: How the extxyz key options are named where the data are given: in a training config, or as
#: flags of ``mlip-train eval`` (the converters' messages use the flag names of ``mlip-data``).
_KEY_OPTION_NAMES = {"config": {"--energy-key": "data.energy_key", "--forces-key": "data.forces_key"},
                     "cli": {}}


def _renamed_options(exc: Exception, where: str) -> str:
    text = str(exc)
    for flag, name in _KEY_OPTION_NAMES[where].items():
        text = text.replace(f"set {flag}", f"set {name} in the config").replace(flag, name)
    return text


def resolve_dataset(paths: list[str], *, cache_dir: Path, pbc: str = "none", energy_key: str | None = None,
                    forces_key: str | None = None, split_fractions=(0.9, 0.1, 0.0), split_seed: int = 0,
                    convert_allowed: bool = True, progress: bool = False, options_from: str = "config") -> list[Path]:
    """HDF5 shard paths for ``paths``; extxyz files are converted once into ``cache_dir``.

    Args:
        paths: shards, shard directories / manifests, or extxyz files.
        convert_allowed: ``False`` on ranks other than 0 (they wait for rank 0's conversion
            and then find the cached file).
        options_from: ``"config"`` (a training config: messages name ``data.energy_key``) or
            ``"cli"`` (``--energy-key`` flags).

    Raises:
        DataError: a missing path, an extxyz file without forces, a failed conversion.
    """
    if not paths:
        raise DataError("data.train", "", "no training data given (a list of HDF5 or extxyz paths)")
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise DataError(p, "", "no such file or directory")
        if not (p.is_file() and is_xyz(p)):
            out.extend(resolve_paths(p))
            continue
        options = {"pbc": pbc, "energy_key": energy_key, "forces_key": forces_key,
                   "split_fractions": list(split_fractions), "split_seed": split_seed}
        cached = Path(cache_dir) / f"{p.name.split('.')[0]}-{_cache_key(p, options)}.h5"
        if not cached.exists() and convert_allowed:
            _check_xyz_forces(p, forces_key)
            cached.parent.mkdir(parents=True, exist_ok=True)
            opts = SourceOptions(pbc=pbc, energy_key=energy_key, forces_key=forces_key)
            try:
                convert("extxyz", [p], cached, options=opts, split_fractions=tuple(split_fractions),
                        split_seed=split_seed, progress=progress)
            except OutputExistsError as exc:  # converted meanwhile by another process: use it
                if isinstance(exc, OutputLockedError):  # still being converted by another process
                    raise DataError(p, "", f"cannot convert to HDF5: {exc}") from None
            except ValueError as exc:
                raise DataError(p, "", f"cannot convert to HDF5: {_renamed_options(exc, options_from)}") from None
        if not cached.exists():
            raise DataError(p, "", f"converted file {cached} is missing")
        out.append(cached)
    return out


# -- statistics ---------------------------------------------------------------------------
#: The element counts and energies of a split (elements present, E0 normal equations); the
#: shards are read by :mod:`mlip.datasets`, which raises :class:`DataError` for a bad shard,
#: a missing split or an empty selection.
scan = composition_stats


def fit_e0s(stats: CompositionStats, elements: list[str]) -> dict[str, float]:
    """Per-element reference energies (eV) minimising sum_s (E_s - sum_i E0[z_i])^2.

    A least-squares fit on the normal equations; with fewer distinct compositions than
    elements (e.g. one molecule) the minimum-norm solution is taken, as MACE does.
    """
    from ase.data import atomic_numbers

    zs = [atomic_numbers[e] for e in elements]
    a = stats.xtx[np.ix_(zs, zs)]
    e0 = np.linalg.lstsq(a, stats.xty[zs], rcond=None)[0]
    return {e: float(v) for e, v in zip(elements, e0)}


def average_e0s(stats: CompositionStats, elements: list[str]) -> dict[str, float]:
    """One reference energy per atom (eV) for every element: the ``e`` minimising
    ``sum_s (E_s - e N_s)^2``, i.e. ``sum_s N_s E_s / sum_s N_s^2`` (the mean energy per atom
    when every structure has the same size)."""
    from ase.data import atomic_numbers

    zs = [atomic_numbers[e] for e in elements]
    e = float(stats.xty[zs].sum() / stats.xtx[np.ix_(zs, zs)].sum())
    return dict.fromkeys(elements, e)


def isolated_e0s(paths) -> dict[str, float]:
    """Energies (eV) of the isolated atoms in HDF5 ``paths``, every split: structures of one atom
    with no periodic direction (MACE's ``config_type=IsolatedAtom`` frames once converted; several
    of one element are averaged). Returns ``{symbol: eV}`` of the elements found."""
    from ase.data import chemical_symbols

    from mlip.datasets import ShardReader, resolve_paths

    found: dict[int, list[float]] = {}
    for path in resolve_paths(paths):
        reader = ShardReader(path)
        try:
            for b in reader.iter_blocks(("atomic_numbers", "energy", "pbc")):
                sizes = np.diff(b.offsets)
                for i in np.flatnonzero((sizes == 1) & ~b.arrays["pbc"].any(axis=1)):
                    found.setdefault(int(b.arrays["atomic_numbers"][b.offsets[i]]), []).append(
                        float(b.arrays["energy"][i]))
        finally:
            reader.close()
    return {chemical_symbols[z]: float(np.mean(v)) for z, v in sorted(found.items())}


def compute_e0s(how, stats: CompositionStats, elements: list[str], paths) -> dict[str, float]:
    """The E0s a training run uses (``model.e0s``: :data:`~mlip.train.config.E0S_CHOICES`, ``None``
    or a mapping), for ``elements`` from the training split's ``stats`` and the training ``paths``.

    Raises:
        ConfigError: a mapping or the isolated atoms of the data lack some of ``elements``.
    """
    from mlip.errors import ConfigError

    if isinstance(how, dict):
        lacking = sorted(set(elements) - set(how))
        if lacking:
            raise ConfigError(f"model.e0s: no reference energy for {lacking}; give all of {elements} "
                              "or null to fit them")
        return dict(how)
    if how == "average":
        return average_e0s(stats, elements)
    if how == "isolated":
        e0s = isolated_e0s(paths)
        lacking = [e for e in elements if e not in e0s]
        if lacking:
            raise ConfigError(f"model.e0s: 'isolated': the training data hold no isolated atom of {lacking} (a "
                              "structure of one atom with no periodic direction, e.g. an extxyz frame with "
                              "config_type=IsolatedAtom); add them, give a mapping, or use least_squares")
        return {e: e0s[e] for e in elements}
    return fit_e0s(stats, elements)


# -- graphs ---------------------------------------------------------------------------------
class GraphTransform:
    """Dataset sample -> model graph (float64 positions) with targets :data:`TARGET_KEYS`.

    Args:
        r_max: cutoff in Å.
        cache: keep graphs by ``structure_id`` (small data sets: the neighbour list is built once).
    """

    def __init__(self, r_max: float, cache: bool = False):
        self.r_max = float(r_max)
        self.cache = {} if cache else None

    def __call__(self, s: Data) -> Data:
        key = int(s.structure_id) if self.cache is not None and "structure_id" in s else None
        if key is not None and key in self.cache:
            return self.cache[key]
        g = build_graph(s.pos.to(torch.float64).numpy(), s.atomic_numbers.numpy(), r_max=self.r_max,
                        cell=s.cell.view(3, 3).to(torch.float64).numpy(), pbc=s.pbc.view(3).numpy())
        g.ref_energy = s.energy.to(torch.float64).view(1)
        g.ref_forces = s.forces.to(torch.float64)
        if "stress" in s:
            g.ref_stress = s.stress.to(torch.float64).view(1, 3, 3)
        g.natoms = torch.tensor([s.pos.shape[0]], dtype=torch.int64)
        if key is not None:
            self.cache[key] = g
        return g


def iterate_batches(dataset, batch_size: int, transform, *, drop_last: bool, num_workers: int = 0, skip: int = 0):
    """Batches of ``batch_size`` graphs from an iterable dataset, skipping the first ``skip``.

    With 0 workers, skipped batches are not turned into graphs (a resume is cheap).
    """
    if num_workers == 0:
        it = iter(dataset)
        k = 0
        while True:
            chunk = list(itertools.islice(it, batch_size))
            if not chunk or (drop_last and len(chunk) < batch_size):
                return
            if k >= skip:
                yield Batch.from_data_list([transform(s) for s in chunk])
            k += 1
    loader = BatchLoader(dataset, batch_size, num_workers=num_workers, transform=transform, drop_last=drop_last)
    yield from itertools.islice(loader, skip, None)


class BatchStream:
    """Endless training batches with a resumable position ``(epoch, batch)``.

    The order depends on ``seed``, the epoch and the rank layout only; each rank reads its
    own shard of each epoch (:class:`~mlip.datasets.StreamingDataset`).
    """

    def __init__(self, paths, split, *, batch_size: int, transform, shuffle: bool, shuffle_buffer: int, seed: int,
                 rank: int, world_size: int, block_size: int | None, num_workers: int, drop_last: bool):
        self.dataset = StreamingDataset(paths, split, shuffle=shuffle, shuffle_buffer=shuffle_buffer, seed=seed,
                                        rank=rank, world_size=world_size, block_size=block_size)
        self.batch_size = batch_size
        self.transform = transform
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.epoch = 0
        self.batch = 0
        self._it = None

    def state_dict(self) -> dict:
        """The position of the next batch: ``{"epoch", "batch"}``."""
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a position saved by :meth:`state_dict`."""
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._it = None

    def __next__(self) -> Batch:
        for _ in range(2):
            if self._it is None:
                self.dataset.set_epoch(self.epoch)
                self._it = iterate_batches(self.dataset, self.batch_size, self.transform, drop_last=self.drop_last,
                                           num_workers=self.num_workers, skip=self.batch)
            batch = next(self._it, None)
            if batch is not None:
                self.batch += 1
                return batch
            if self.batch == 0:
                break
            self.epoch, self.batch, self._it = self.epoch + 1, 0, None
        raise DataError(", ".join(map(str, self.dataset.paths)), "",
                        f"the training data of this process holds fewer than {self.batch_size} structures "
                        f"(one batch); lower train.batch_size or data.block_size")

    def __iter__(self):
        return self
