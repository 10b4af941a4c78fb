"""Summary statistics of a converted dataset (``mlip-data info``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import SkipReport
from .manifest import resolve_paths
from .reader import ShardReader
from .units import CHEMICAL_SYMBOLS

_BLOCK = 65536


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
    readers = [ShardReader(p) for p in files]
    elements = np.zeros(256, np.int64)
    natoms, energy, e_per_atom, f_comp, f_norm = _Moments(), _Moments(), _Moments(), _Moments(), _Moments()
    splits: dict[str, int] = {}
    stages = np.zeros(256, np.int64)
    report = SkipReport()
    for r in readers:
        for a in range(0, r.n_structures, _BLOCK):
            b = r.read_block(a, min(a + _BLOCK, r.n_structures))
            x = b.arrays
            elements += np.bincount(x["atomic_numbers"], minlength=256)
            natoms.add(x["natoms"])
            energy.add(x["energy"])
            e_per_atom.add(x["energy"] / x["natoms"])
            f_comp.add(x["forces"])
            f_norm.add(np.linalg.norm(x["forces"], axis=1))
            stages += np.bincount(x["stage"], minlength=256)
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
        "units": {k: a0.get(k) for k in ("units_energy", "units_length", "units_forces", "units_stress")},
        "n_structures": sum(r.n_structures for r in readers),
        "n_atoms": sum(r.n_atoms for r in readers),
        "optional_fields": sorted(set().union(*(r.optional for r in readers))),
        "elements": {CHEMICAL_SYMBOLS[z]: int(c) for z, c in enumerate(elements) if c and z < len(CHEMICAL_SYMBOLS)},
        "stages": {(stage_names[i] if i < len(stage_names) else str(i)) or "-": int(c)
                   for i, c in enumerate(stages) if c},
        "natoms": natoms.to_dict(),
        "energy_eV": energy.to_dict(),
        "energy_per_atom_eV": e_per_atom.to_dict(),
        "force_component_eV_per_A": {**f_comp.to_dict(), "rms": float(np.sqrt(f_comp.m2 / max(f_comp.n, 1) + f_comp.mean**2))},
        "force_norm_eV_per_A": f_norm.to_dict(),
        "splits": splits,
        "skipped_at_conversion": report.skipped,
    }


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
        f"natoms           {stats(info['natoms'])}",
        "elements         " + ", ".join(f"{k}: {v:,}" for k, v in info["elements"].items()),
        f"energy (eV)      {stats(info['energy_eV'])}",
        f"energy/atom (eV) {stats(info['energy_per_atom_eV'])}",
        f"force comp (eV/A) {stats(info['force_component_eV_per_A'])}  rms {info['force_component_eV_per_A']['rms']:.6g}",
        f"|force| (eV/A)   {stats(info['force_norm_eV_per_A'])}",
        "splits           " + (", ".join(f"{k}: {v:,}" for k, v in info["splits"].items()) or "none"),
    ]
    if info["optional_fields"]:
        lines.append("optional fields  " + ", ".join(info["optional_fields"]))
    if len(info["stages"]) > 1 or (info["stages"] and "-" not in info["stages"]):
        lines.append("stages           " + ", ".join(f"{k}: {v:,}" for k, v in info["stages"].items()))
    lines.append(f"skipped at conversion: {info['skipped_at_conversion']}")
    return "\n".join(lines)
