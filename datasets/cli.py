"""``mlip-data``: convert source datasets to HDF5 shards, inspect them, split them.

Examples::

    mlip-data convert --format pubchemqcr pubchemqcr/*.lmdb -o pcqcr/ --stage DFT_1st
    mlip-data convert --format oc20 s2ef_train_2M/ -o oc20_2M/ --subtract-reference
    mlip-data convert --format oc22 oc22/s2ef-total/train/ -o oc22/ --element-energies oc22_linref.npz
    mlip-data convert --format extxyz ethanol_train_01.xyz -o ethanol.h5 --energy-key Energy --pbc none
    mlip-data convert --format asedb omat/train/ -o omat/ --level-of-theory "PBE+U (VASP)"
    mlip-data info pcqcr/
    mlip-data split pcqcr/ --by trajectory --fractions 0.8 0.1 0.1 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .convert import DEFAULT_SHARD_SIZE, convert
from .errors import DataError
from .info import dataset_info, format_info
from .manifest import MANIFEST, read_manifest, resolve_paths, write_manifest
from .references import ElementEnergies
from .sources import SOURCES, SourceOptions
from .sources.pubchemqcr import STAGES
from .splits import split_shards


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlip-data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert source files to HDF5 shards",
                       description="Convert source files to HDF5 (eV, Å). Writes each file under a temporary name and "
                                   "renames it when complete; a directory OUT is resumable shard by shard.")
    c.add_argument("--format", required=True, choices=sorted(SOURCES),
                   help="source layout: pubchemqcr (LMDB of gzip-pickled dicts), oc20 (extxyz[.xz]+txt or LMDB "
                        "of pickled Data), oc22 (LMDB of pickled Data), extxyz (extxyz or any ASE format), asedb (ASE "
                        "databases: .db, .json, fairchem's .aselmdb)")
    c.add_argument("sources", nargs="+", metavar="SOURCE", help="source files or directories (searched for the "
                                                                 "format's file types, sorted by name)")
    c.add_argument("-o", "--out", required=True, metavar="OUT",
                   help="output: a .h5 file, or a directory of shards with manifest.json")
    c.add_argument("--shard-size", type=int, default=None, metavar="N",
                   help=f"structures per shard for directory output (default {DEFAULT_SHARD_SIZE:,})")
    c.add_argument("--skip-bad", action="store_true",
                   help="skip bad records (counted, printed and stored in the output) instead of stopping")
    c.add_argument("--resume", action="store_true",
                   help="continue an interrupted directory conversion, keeping completed shards (a plain rerun "
                        "of the same command does this too); fails if OUT holds no partial conversion. A .h5 OUT is "
                        "always written from the start")
    c.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    c.add_argument("--compression", choices=("none", "lzf", "gzip"), default="none",
                   help="HDF5 compression (default none: lzf/gzip save only 15-25%% on float data; gzip makes "
                        "per-structure random reads ~4x slower)")
    c.add_argument("--element-energies", metavar="FILE",
                   help="subtract per-element energies: JSON {symbol: eV} or {'unit': 'hartree', 'energies': "
                        "{...}} (isolated atoms), or NPZ with 'coeff' indexed by Z in eV (OC22 linear reference)")
    c.add_argument("--level-of-theory", metavar="TEXT", help="record this level of theory (default: per format)")
    c.add_argument("--split-fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"),
                   help="train/val/test fractions of trajectories written at the end (default 0.8 0.1 0.1)")
    c.add_argument("--split-seed", type=int, default=0, help="seed of the trajectory permutation (default 0)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    g = c.add_argument_group("pubchemqcr")
    g.add_argument("--stage", choices=STAGES + ("all",), default="DFT_1st",
                   help="optimisation stage to convert (default DFT_1st; all keeps every stage, stage id stored)")
    g.add_argument("--strict", action="store_true",
                   help="stop at an incomplete step (energy or gradient missing or non-finite, atom count differing "
                        "from the trajectory's) like at any bad record; by default such steps are skipped, as the "
                        "reference loader does, and counted by reason in the printed and stored skip report")
    g = c.add_argument_group("oc20")
    g.add_argument("--subtract-reference", action="store_true",
                   help="subtract the .txt per-frame reference energy (adsorption energy); default keeps totals")
    g = c.add_argument_group("extxyz, oc20 extxyz and asedb (asedb also looks in key_value_pairs and data)")
    g.add_argument("--energy-key", help="energy key in the comment line (default: first of energy, Energy, "
                                        "REF_energy, free_energy found)")
    g.add_argument("--forces-key", help="per-atom forces column (default: first of forces, REF_forces, force)")
    g.add_argument("--stress-key", help="stress key (default: stress or REF_stress if present)")
    g.add_argument("--pbc", choices=("auto", "none", "all"), default="auto",
                   help="auto: as ASE reads it (a Lattice without a pbc key counts as periodic; a note is printed); "
                        "none: non-periodic (e.g. rMD17's 50 A box); all: periodic")
    g.add_argument("--trajectory-key", default="frame", metavar="KEY",
                   help="what defines a trajectory for splits: 'frame' (each frame; default; asedb: the row's "
                        "sid when it has one), 'file', or an info key holding an id")

    i = sub.add_parser("info", help="counts, elements, periodicity, energy/force statistics and splits of a dataset")
    i.add_argument("path", nargs="+", metavar="OUT",
                   help="a .h5 file, a shard directory or a manifest; several: a summary of each, then of all "
                        "together (each input is read twice)")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")

    s = sub.add_parser("split", help="(re)write train/val/test splits by trajectory")
    s.add_argument("path", nargs="+", metavar="OUT", help="a .h5 file, a shard directory or a manifest")
    s.add_argument("--by", choices=("trajectory",), default="trajectory",
                   help="unit kept whole: trajectory (never frame, so no trajectory leaks across splits)")
    s.add_argument("--fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"),
                   help="fractions of trajectories (default 0.8 0.1 0.1)")
    s.add_argument("--seed", type=int, default=0, help="permutation seed (default 0)")
    return p


def _convert(a) -> int:
    options = SourceOptions(
        stage=a.stage, subtract_reference=a.subtract_reference,
        element_energies=ElementEnergies.load(a.element_energies) if a.element_energies else None,
        energy_key=a.energy_key, forces_key=a.forces_key, stress_key=a.stress_key, pbc=a.pbc,
        trajectory_key=a.trajectory_key, level_of_theory=a.level_of_theory, strict=a.strict)
    r = convert(a.format, a.sources, a.out, options=options, shard_size=a.shard_size, skip_bad=a.skip_bad,
                resume=a.resume, overwrite=a.overwrite, compression=a.compression,
                split_fractions=a.split_fractions, split_seed=a.split_seed, progress=not a.quiet)
    rate = r.n_structures / r.seconds if r.seconds > 0 else float("nan")
    print(f"wrote {r.n_structures:,} structures ({r.n_atoms:,} atoms) in {len(r.paths)} file(s) to {a.out}"
          + (f", {r.resumed_shards} shard(s) kept from an earlier run" if r.resumed_shards else "")
          + f" [{r.seconds:.1f} s, {rate:,.0f} structures/s this run]")
    print("splits: " + ", ".join(f"{k} {v:,}" for k, v in r.splits.items()))
    print(r.report.summary(), file=sys.stderr if r.report.skipped else sys.stdout)
    for note in r.notes:
        print("note: " + note, file=sys.stderr)
    return 0


def _info(a) -> int:
    total = dataset_info(a.path)
    inputs = [{"input": str(p), **dataset_info([p])} for p in a.path] if len(a.path) > 1 else []
    if a.json:
        print(json.dumps({"inputs": inputs, "total": total} if inputs else total, indent=1))
    elif inputs:
        print("\n\n".join([f"== {i['input']}\n{format_info(i)}" for i in inputs]
                          + [f"== total of {len(inputs)} inputs\n{format_info(total)}"]))
    else:
        print(format_info(total))
    return 0


def _split(a) -> int:
    paths = resolve_paths(a.path)
    counts = split_shards(paths, a.fractions, a.seed, by=a.by)
    for p in a.path:  # keep a directory's manifest in step
        mpath = Path(p) / MANIFEST if Path(p).is_dir() else Path(p)
        if mpath.name == MANIFEST and mpath.exists():
            m = read_manifest(mpath)
            m["splits"] = counts
            write_manifest(mpath.parent, m)
    print("splits: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return 0


def main(argv=None) -> int:
    """Entry point of ``mlip-data``; returns the exit status (2 for bad input)."""
    a = _parser().parse_args(argv)
    try:
        if a.command == "convert":
            return _convert(a)
        if a.command == "info":
            return _info(a)
        return _split(a)
    except (DataError, FileExistsError, FileNotFoundError, ValueError, ImportError) as exc:  # ImportError: an extra
        print(f"mlip-data {a.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlip-data {a.command}: interrupted; completed shards are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
