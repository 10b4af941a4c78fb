"""Statistics of converted shards, read column by column in bounded blocks.

* :func:`dataset_info` - counts, elements, energy / force statistics, splits (``mlip-data info``).
* :func:`composition_stats` - the element counts and energies of one split that training
  needs: the elements present and the normal equations of the per-element reference
  energy (E0) least-squares fit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, SkipReport
from .manifest import resolve_paths
from .reader import open_shards
from .units import CHEMICAL_SYMBOLS

_BLOCK = 65536
_INFO_FIELDS = ("atomic_numbers", "natoms", "energy", "forces", "stage", "pbc")
_N_Z = 119  # atomic numbers 0..118


class _Moments:
    """Streaming count / mean / M2 / min / max (Chan et al. parallel update)."""

    def __init__(self):
        self.n, self.mean, self.m2, self.min, self.max = 0, 0.0, 0.0, np.inf, -np.inf

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        if not x.size:
            return
        n, mean = x.size, x.mean()
        delta = mean - self.mean
        tot = self.n + n
        self.m2 += ((x - mean) ** 2).sum() + delta**2 * self.n * n / tot
        self.mean += delta * n / tot
        self.n = tot
        self.min, self.max = min(self.min, x.min()), max(self.max, x.max())

    def to_dict(self) -> dict:
        std = float(np.sqrt(self.m2 / self.n)) if self.n else float("nan")
        return {"mean": float(self.mean), "std": std, "min": float(self.min), "max": float(self.max)}


def dataset_info(paths) -> dict:
    """Counts, elements, energy / force statistics and splits of a dataset.

    Reads the shards in blocks of 65,536 structures (memory stays bounded).

    Returns:
        A JSON-able dict (energies eV, forces eV/Å).
    """
    files = resolve_paths(paths)
    readers = open_shards(files)
    elements = np.zeros(256, np.int64)
    natoms, energy, e_per_atom, f_comp, f_norm = _Moments(), _Moments(), _Moments(), _Moments(), _Moments()
    splits: dict[str, int] = {}
    stages = np.zeros(256, np.int64)
    periodic_dims = np.zeros(4, np.int64)  # structures periodic along 0, 1, 2, 3 cell vectors
    report = SkipReport()
    for r in readers:
        for b in r.iter_blocks(_INFO_FIELDS, size=_BLOCK):
            x = b.arrays
            elements += np.bincount(x["atomic_numbers"], minlength=256)
            natoms.add(x["natoms"])
            energy.add(x["energy"])
            e_per_atom.add(x["energy"] / x["natoms"])
            f_comp.add(x["forces"])
            f_norm.add(np.linalg.norm(x["forces"], axis=1))
            stages += np.bincount(x["stage"], minlength=256)
            periodic_dims += np.bincount(x["pbc"].sum(axis=1), minlength=4)
        r.close()
        for k, v in r.splits.items():
            splits[k] = splits.get(k, 0) + v
        report.merge(json.loads(r.attrs.get("skip_report", "{}")))
    a0 = readers[0].attrs
    stage_names = readers[0].json_attr("stage_names", [""])
    return {
        "files": [str(p) for p in files],
        "bytes": sum(Path(p).stat().st_size for p in files),
        "schema_version": int(a0.get("schema_version", 0)),
        "source": a0.get("source"),
        "level_of_theory": a0.get("level_of_theory"),
        "energy_reference": a0.get("energy_reference"),
        "lmdb_key_order": a0.get("lmdb_key_order"),
        "units": {k: a0.get(k) for k in ("units_energy", "units_length", "units_forces", "units_stress")},
        "n_structures": sum(r.n_structures for r in readers),
        "n_atoms": sum(r.n_atoms for r in readers),
        "optional_fields": sorted(set().union(*(r.optional for r in readers))),
        "elements": {CHEMICAL_SYMBOLS[z]: int(c) for z, c in enumerate(elements) if c and z < len(CHEMICAL_SYMBOLS)},
        "stages": {(stage_names[i] if i < len(stage_names) else str(i)) or "-": int(c)
                   for i, c in enumerate(stages) if c},
        "pbc": {name: int(c) for name, c in zip(("none", "1D", "2D", "3D"), periodic_dims) if c},
        "natoms": natoms.to_dict(),
        "energy_eV": energy.to_dict(),
        "energy_per_atom_eV": e_per_atom.to_dict(),
        "force_component_eV_per_A": {**f_comp.to_dict(),
                                     "rms": float(np.sqrt(f_comp.m2 / max(f_comp.n, 1) + f_comp.mean**2))},
        "force_norm_eV_per_A": f_norm.to_dict(),
        "splits": splits,
        "splits_source": sorted({r.splits_source or "none" for r in readers}),
        "checksums": {"verified": sum(r.checksums == "all" for r in readers),
                      "without": [str(r.path) for r in readers if r.checksums != "all"]},
        "skipped_at_conversion": report.skipped,
    }


@dataclass
class CompositionStats:
    """Element counts and energies of a selection of structures (see :func:`composition_stats`).

    Attributes:
        n_structures, n_atoms: totals.
        elements: atomic numbers present (sorted).
        xtx: ``[119, 119]`` element-count normal matrix: the sum over structures of
            ``c c^T``, ``c[z]`` the number of atoms of atomic number ``z``.
        xty: ``[119]`` sum over structures of ``c * energy`` (eV).
        has_stress: every shard stores stress.
    """

    n_structures: int
    n_atoms: int
    elements: list[int]
    xtx: np.ndarray
    xty: np.ndarray
    has_stress: bool

    @property
    def symbols(self) -> list[str]:
        """Chemical symbols of :attr:`elements`."""
        return [CHEMICAL_SYMBOLS[z] for z in self.elements]


def composition_stats(paths, split: str | None = None, *, block: int = _BLOCK) -> CompositionStats:
    """Element counts and energies of ``split`` (``None``: every structure) of a dataset.

    Reads only the atomic numbers and energies (and the offsets), ``block`` structures at a
    time, so memory stays bounded. Least-squares E0s solve ``xtx[zs, zs] e0 = xty[zs]``.

    Args:
        paths: as for :func:`~mlip.datasets.resolve_paths` (shards, manifests, directories).

    Raises:
        DataError: a missing or bad shard, a shard without the split, or an empty selection.
    """
    files = resolve_paths(paths)
    xtx = np.zeros((_N_Z, _N_Z))
    xty = np.zeros(_N_Z)
    present = np.zeros(_N_Z, bool)
    n_s = n_a = 0
    has_stress = True
    for reader in open_shards(files):
        has_stress &= "stress" in reader.optional
        try:
            select = None if split is None else reader.split_indices(split)
            for b in reader.iter_blocks(("atomic_numbers", "energy"), size=block):
                n = b.stop - b.start
                z = b.arrays["atomic_numbers"].astype(np.int64)
                energy = b.arrays["energy"].astype(np.float64)
                owner = np.repeat(np.arange(n), np.diff(b.offsets))
                counts = np.zeros((n, _N_Z))
                np.add.at(counts, (owner, z), 1.0)
                if select is not None:
                    lo, hi = np.searchsorted(select, [b.start, b.stop])
                    rows = select[lo:hi] - b.start
                    counts, energy = counts[rows], energy[rows]
                xtx += counts.T @ counts
                xty += counts.T @ energy
                present |= counts.sum(0) > 0
                n_s += len(energy)
                n_a += int(counts.sum())
        finally:
            reader.close()
    if n_s == 0:
        raise DataError(", ".join(map(str, files)), "", f"split {split!r} holds no structures")
    return CompositionStats(n_s, n_a, np.flatnonzero(present).tolist(), xtx, xty, has_stress)


def format_info(info: dict) -> str:
    """Human-readable rendering of :func:`dataset_info`."""
    def stats(d):
        return f"mean {d['mean']:.6g}  std {d['std']:.6g}  min {d['min']:.6g}  max {d['max']:.6g}"

    lines = [
        f"files            {len(info['files'])} ({info['bytes'] / 1e6:.1f} MB), schema v{info['schema_version']}",
        f"source           {info['source']}  |  level of theory: {info['level_of_theory']}",
        f"energy reference {info['energy_reference']}",
        f"units            {', '.join(str(v) for v in info['units'].values())}",
        f"structures       {info['n_structures']:,}",
        f"atoms            {info['n_atoms']:,}",
        "periodic         " + (", ".join(f"{k}: {v:,}" for k, v in info.get("pbc", {}).items()) or "-")
        + "  (structures by periodic cell vectors)",
        f"natoms           {stats(info['natoms'])}",
        "elements         " + ", ".join(f"{k}: {v:,}" for k, v in info["elements"].items()),
        f"energy (eV)      {stats(info['energy_eV'])}",
        f"energy/atom (eV) {stats(info['energy_per_atom_eV'])}",
        f"force comp (eV/A) {stats(info['force_component_eV_per_A'])}"
        f"  rms {info['force_component_eV_per_A']['rms']:.6g}",
        f"|force| (eV/A)   {stats(info['force_norm_eV_per_A'])}",
        "splits           " + (", ".join(f"{k}: {v:,}" for k, v in info["splits"].items()) or "none")
        + (f"  (stored {'/'.join(info['splits_source'])})" if info["splits"] else ""),
    ]
    c = info["checksums"]
    if not c["without"]:
        lines.append("checksums        fletcher32 on every dataset, verified on read")
    else:
        lines.append(f"checksums        NONE in {len(c['without'])} of {len(info['files'])} file(s) (written before "
                     "checksums: corruption there goes unnoticed; convert again to add them): "
                     + ", ".join(c["without"][:3]) + (" ..." if len(c["without"]) > 3 else ""))
    if info["optional_fields"]:
        lines.append("optional fields  " + ", ".join(info["optional_fields"]))
    if info.get("lmdb_key_order"):
        lines.append(f"LMDB key order   {info['lmdb_key_order']}")
    if len(info["stages"]) > 1 or (info["stages"] and "-" not in info["stages"]):
        lines.append("stages           " + ", ".join(f"{k}: {v:,}" for k, v in info["stages"].items()))
    lines.append(f"skipped at conversion: {info['skipped_at_conversion']}")
    return "\n".join(lines)
