"""Builders of small source files in the real layouts, for tests and examples.

Labels are real: ASE's EMT calculator (CO on Cu(111) relaxations, rattled
bulk Cu with stress) or frames passed in (e.g. the rMD17 excerpt). The files
are written with the same libraries and layouts as the originals: LMDB via
``lmdb`` (the ``lmdb`` extra, imported when an LMDB file is written), gzip +
pickle values, pickled torch-geometric ``Data``, extxyz with OC20 ``.txt``
companions, ``.xz`` via ``lzma``.

:func:`shared_data_dir` finds the shared folder of real DFT data sets that some
tests and benchmarks read.
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import pickle
from pathlib import Path

import numpy as np

from .sources.lmdb_files import import_lmdb
from .units import BOHR_ANGSTROM, HARTREE_EV
from .writer import ShardWriter

SHARED_DATA_ENV = "MLIP_SHARED_DATA"


def shared_data_dir() -> Path | None:
    """The folder of shared DFT data sets (``rmd17/``, ``3bpa/``, ...), or ``None``.

    ``$MLIP_SHARED_DATA`` when set (returned as given, even if it does not exist: callers
    then name the missing file); else ``shared/data`` next to the source checkout this package
    was imported from (``<checkout>/../shared/data``), if that folder exists. An installed
    (non-editable) package has no checkout and finds nothing there.
    """
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env).expanduser()
    root = Path(__file__).resolve().parents[1]  # datasets/ -> the checkout, in a source tree
    if not (root / "pyproject.toml").is_file():
        return None
    candidate = root.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def emt_co_on_cu(steps: int = 12, seed: int = 0, size=(2, 2, 3)) -> list:
    """Frames of a BFGS relaxation of CO on Cu(111) with EMT.

    Returns ``ase.Atoms`` with a single-point calculator (energy eV, forces
    eV/Å without constraints), OC20 tags (0 sub-surface, 1 surface,
    2 adsorbate) and ``FixAtoms`` on the sub-surface layers.
    """
    from ase.build import add_adsorbate, fcc111, molecule
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms
    from ase.optimize import BFGS

    slab = fcc111("Cu", size=size, vacuum=7.0)
    layer = slab.get_tags()
    add_adsorbate(slab, molecule("CO"), 2.0, "ontop")
    tags = np.array([1 if t == 1 else 0 for t in layer] + [2, 2])
    slab.set_tags(tags)
    rng = np.random.default_rng(seed)
    slab.positions[tags > 0] += rng.normal(scale=0.08, size=((tags > 0).sum(), 3))
    slab.set_constraint(FixAtoms(mask=tags == 0))
    slab.calc = EMT()
    frames = []

    slab.info.pop("adsorbate_info", None)  # a dict; extxyz cannot store it

    def record():
        a = slab.copy()
        a.calc = SinglePointCalculator(a, energy=slab.get_potential_energy(),
                                       forces=slab.get_forces(apply_constraint=False))
        frames.append(a)

    opt = BFGS(slab, logfile=None)
    opt.attach(record)
    opt.run(fmax=1e-4, steps=steps - 1)
    return frames[:steps]


def emt_bulk_cu(n: int = 8, seed: int = 0) -> list:
    """Rattled, strained bulk Cu (32 atoms) with EMT energy, forces and stress."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = bulk("Cu", cubic=True).repeat((2, 2, 2))
        a.set_cell(a.cell.array @ (np.eye(3) + rng.normal(scale=0.01, size=(3, 3))), scale_atoms=True)
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        a.calc = EMT()
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        out.append(a)
    return out


def write_oc20_extxyz(path: str | Path, systems: list, references: dict, compress: bool = False,
                      free_energy_shift: float | None = None) -> Path:
    """Write OC20 S2EF-style structure and reference files, as downloaded.

    Args:
        path: ``name.extxyz``.
        systems: list of ``(sid, frames)``; frames are written in order with
            ``fid`` = position in their list.
        references: sid -> reference energy (eV) written to the ``.txt``.
        compress: write the pair as shipped, ``name.extxyz.xz`` + ``name.txt.xz``;
            otherwise the plain pair fairchem's ``uncompress.py`` leaves,
            ``name.extxyz`` + ``name.txt``.
        free_energy_shift: also write ``free_energy`` (= energy + this) beside
            ``energy`` on every frame, as the OC20 extxyz files carry both.

    Returns the path of the structure file.
    """
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    path = Path(path)
    txt = path.with_name(path.name.split(".")[0] + ".txt")
    frames, lines = [], []
    for sid, fr in systems:
        for fid, a in enumerate(fr):
            if free_energy_shift is not None:
                e = a.get_potential_energy()
                f = a.get_forces(apply_constraint=False)
                a = a.copy()
                a.calc = SinglePointCalculator(a, energy=e, free_energy=e + free_energy_shift, forces=f)
            frames.append(a)
            lines.append(f"random{sid},frame{fid},{references[sid]!r}\n")
    ase.io.write(path, frames, format="extxyz")
    text = "".join(lines).encode()
    if compress:
        data = path.read_bytes()
        path.unlink()
        path = path.with_name(path.name + ".xz")
        path.write_bytes(lzma.compress(data))
        txt.with_name(txt.name + ".xz").write_bytes(lzma.compress(text))
    else:
        txt.write_bytes(text)
    return path


def atoms_to_data(atoms, sid: int, fid: int, energy: float | None = None, layout: str = "2021"):
    """An OC20-LMDB-style ``Data`` for ``atoms``.

    Args:
        layout: the field set of a writer. ``"2021"``: the S2EF LMDBs as
            published (``y``, ``force``, float32 ``atomic_numbers`` and
            ``fixed``, tensor ``fid``). ``"fairchem"``: fairchem's current
            writer (``energy``, ``forces``, uint8 ``atomic_numbers``, int32
            ``fixed``, positions wrapped into the cell, ``fid`` a plain int).
            ``"is2re"``: an IS2RE LMDB (``pos``, ``pos_relaxed``, ``y_init``,
            ``y_relaxed``; no forces; ``energy`` is the relaxed energy).
    """
    import torch
    from ase.constraints import FixAtoms
    from torch_geometric.data import Data

    fixed = np.zeros(len(atoms))
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            fixed[c.index] = 1
    e = float(atoms.get_potential_energy() if energy is None else energy)
    common = dict(cell=torch.tensor(np.asarray(atoms.cell), dtype=torch.float32).view(1, 3, 3), natoms=len(atoms),
                  tags=torch.tensor(atoms.get_tags(), dtype=torch.int64), sid=sid)
    if layout == "2021":
        return Data(
            pos=torch.tensor(atoms.positions, dtype=torch.float32),
            atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.float32),
            fixed=torch.tensor(fixed, dtype=torch.float32),
            y=e,
            force=torch.tensor(atoms.get_forces(apply_constraint=False), dtype=torch.float32),
            fid=torch.tensor(fid),
            **common,
        )
    if layout == "fairchem":
        return Data(
            pos=torch.tensor(atoms.get_positions(wrap=True), dtype=torch.float32),
            atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.uint8),
            fixed=torch.tensor(fixed, dtype=torch.int32),
            energy=e,
            forces=torch.tensor(atoms.get_forces(apply_constraint=False), dtype=torch.float32),
            fid=int(fid),
            **common,
        )
    if layout == "is2re":
        return Data(
            pos=torch.tensor(atoms.positions, dtype=torch.float32),
            pos_relaxed=torch.tensor(atoms.positions, dtype=torch.float32),
            atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.float32),
            fixed=torch.tensor(fixed, dtype=torch.float32),
            y_init=e + 1.0,
            y_relaxed=e,
            **common,
        )
    raise ValueError(f"layout must be 2021, fairchem or is2re; got {layout!r}")


def write_lmdb(path: str | Path, items: dict, map_size: int = 1 << 30) -> Path:
    """Write ``{key bytes: value bytes}`` to a single-file LMDB (``subdir=False``).

    Raises:
        ImportError: if the ``lmdb`` extra is not installed.
    """
    lmdb = import_lmdb()
    path = Path(path)
    env = lmdb.open(str(path), subdir=False, map_size=map_size, lock=True)
    with env.begin(write=True) as txn:
        for k, v in items.items():
            txn.put(k, v)
    env.sync()
    env.close()
    lock = Path(str(path) + "-lock")
    if lock.exists():
        lock.unlink()
    return path


def write_data_lmdb(path: str | Path, datas: list, length_key: bool = True) -> Path:
    """OC20/OC22-style LMDB: keys ``b"0"``, ``b"1"``...; values ``pickle.dumps(Data)``."""
    items = {str(i).encode("ascii"): pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL) for i, d in enumerate(datas)}
    if length_key:
        items[b"length"] = pickle.dumps(len(datas))
    return write_lmdb(path, items)


def pubchemqcr_steps(frames: list, with_charge: bool = True, float_charge: bool = False,
                     missing: dict | None = None) -> list:
    """PubChemQCR steps from labelled frames: Å coordinates, Hartree, Hartree/Bohr gradient.

    Args:
        with_charge: give each coordinate / gradient entry a ``charge`` (SMASH
            steps have none).
        float_charge: write the charge as a float (``6.0``), as many real steps do.
        missing: step index -> ``"step"`` (the step is ``None``), ``"energy"`` or
            ``"gradient"`` (that value is ``None``): the incomplete steps of the
            real data.
    """
    steps = []
    for a in frames:
        f = a.get_forces() if a.calc is not None else a.arrays["forces"]
        e = a.get_potential_energy() if a.calc is not None else a.info["energy"]
        coords, grad = [], []
        for sym, z, p, g in zip(a.get_chemical_symbols(), a.numbers, a.positions, -f * BOHR_ANGSTROM / HARTREE_EV):
            c = {"atom": sym, "x": float(p[0]), "y": float(p[1]), "z": float(p[2])}
            d = {"atom": sym, "dx": float(g[0]), "dy": float(g[1]), "dz": float(g[2])}
            if with_charge:
                c["charge"] = d["charge"] = float(z) if float_charge else int(z)
            coords.append(c)
            grad.append(d)
        steps.append({"coordinates": coords, "energy": float(e) / HARTREE_EV, "gradient": grad})
    for i, what in (missing or {}).items():
        if what == "step":
            steps[i] = None
        elif what in ("energy", "gradient"):
            steps[i][what] = None
        else:
            raise ValueError(f"missing: step, energy or gradient; got {what!r}")
    return steps


def pubchemqcr_value(record: dict) -> bytes:
    """Encode a PubChemQCR record as stored: ``gzip.compress(pickle.dumps(record))``."""
    return gzip.compress(pickle.dumps(record))


def write_pubchemqcr_lmdb(path: str | Path, records: dict) -> Path:
    """Write ``{cid: {stage: steps or None}}`` as a PubChemQCR LMDB (keys 9-digit CIDs)."""
    return write_lmdb(path, {f"{cid:09d}".encode(): pubchemqcr_value(r) for cid, r in records.items()})


def aselmdb_row(atoms, key_value_pairs: dict | None = None, data: dict | None = None) -> dict:
    """The row dict an ASE-LMDB stores for ``atoms`` (ASE's ``AtomsRow`` fields, calculator results at
    the top level, ``key_value_pairs``, ``data``, ``constraints`` as dicts, ``cell`` as an array)."""
    from ase.db.row import AtomsRow

    row = AtomsRow(atoms)
    dct = {k: v for k, v in row.__dict__.items() if not k.startswith("_") and k != "id"}
    dct["ctime"] = dct["mtime"] = 24.0
    dct["user"] = "mlip"
    dct["key_value_pairs"] = dict(key_value_pairs or {})
    dct["data"] = dict(data or {})
    constraints = [c.todict() for c in atoms.constraints]
    if constraints:
        dct["constraints"] = constraints
    dct["cell"] = np.asarray(dct["cell"])
    return dct


def _plain_json(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj).__name__)


def write_aselmdb(path: str | Path, rows: list, encoding: str = "ase", deleted=(),
                  metadata: dict | None = None) -> Path:
    """Write an ASE-LMDB (``.aselmdb``) file in fairchem's layout, without ``ase-db-backends``.

    Args:
        rows: ``ase.Atoms`` or ``(atoms, key_value_pairs, data)``; row ids 1, 2, ...
        encoding: ``"ase"``: values JSON-encoded by ASE (arrays as ``__ndarray__``
            objects), as ``ase-db-backends`` writes; ``"lists"``: arrays as nested
            lists, as fairchem's orjson writer did.
        deleted: row ids to leave out and list in ``deleted_ids`` (rows deleted later).
        metadata: stored under ``metadata`` when given.

    Every value is zlib-compressed JSON; ``nextid`` is one past the last id.
    """
    import json
    import zlib

    from ase.io.jsonio import encode

    def enc(obj) -> bytes:
        if encoding == "ase":
            text = encode(obj)
        elif encoding == "lists":
            text = json.dumps(obj, default=_plain_json)
        else:
            raise ValueError(f"encoding must be ase or lists; got {encoding!r}")
        return zlib.compress(text.encode("utf-8"))

    items = {}
    for i, r in enumerate(rows, start=1):
        atoms, kvp, data = (r, None, None) if not isinstance(r, tuple) else r
        if i not in deleted:
            items[str(i).encode("ascii")] = enc(aselmdb_row(atoms, kvp, data))
    items[b"nextid"] = enc(len(rows) + 1)
    if deleted:
        items[b"deleted_ids"] = enc(sorted(deleted))
    if metadata is not None:
        items[b"metadata"] = enc(metadata)
    return write_lmdb(path, items)


def write_ase_db(path: str | Path, rows: list) -> Path:
    """Write an ASE ``.db`` (SQLite) or ``.json`` database with ``ase.db`` (rows as for :func:`write_aselmdb`)."""
    import ase.db

    path = Path(path)
    with ase.db.connect(str(path), append=False, use_lock_file=False) as db:
        for r in rows:
            atoms, kvp, data = (r, None, None) if not isinstance(r, tuple) else r
            db.write(atoms, key_value_pairs=kvp or {}, data=data or {})
    return path


@contextlib.contextmanager
def interrupting_append(after: int):
    """Within the block, :meth:`ShardWriter.append` raises ``KeyboardInterrupt`` at its ``after``-th call
    (a conversion killed part-way, for resume tests)."""
    from . import writer as writer_mod

    real = writer_mod.ShardWriter.append
    calls = {"n": 0}

    def append(self, s):
        calls["n"] += 1
        if calls["n"] == after:
            raise KeyboardInterrupt
        return real(self, s)

    writer_mod.ShardWriter.append = append
    try:
        yield
    finally:
        writer_mod.ShardWriter.append = real


def write_synthetic_shard(path: str | Path, n_structures: int, natoms: int = 20, seed: int = 0,
                          block: int = 50_000, **writer_kwargs) -> Path:
    """A shard of random structures of ``natoms`` atoms each, written in columnar blocks.

    Positions in a 10 Å box, forces ~N(0, 1) eV/Å, energies ~N(-100, 5) eV,
    trajectory id = structure index // 10. For memory and speed tests.
    """
    rng = np.random.default_rng(seed)
    with ShardWriter(path, attrs={"source": "synthetic"}, **writer_kwargs) as w:
        for a in range(0, n_structures, block):
            s = min(block, n_structures - a)
            n = s * natoms
            w.append_arrays(
                positions=rng.random((n, 3), dtype=np.float32) * 10,
                forces=rng.standard_normal((n, 3), dtype=np.float32),
                atomic_numbers=rng.integers(1, 10, n, dtype=np.uint8),
                natoms=np.full(s, natoms, np.int32),
                energy=rng.normal(-100, 5, s),
                trajectory_id=np.arange(a, a + s) // 10,
                frame_id=np.arange(a, a + s) % 10,
            )
    return Path(path)
