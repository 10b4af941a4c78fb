"""Data-pipeline benchmark: conversion rate, streaming rate and peak memory.

Conversion (structures/s, one process) from each source layout, built here from
real labelled data: rMD17 aspirin (extxyz, ``rmd17/aspirin_train_01.xyz`` of the shared
DFT data folder: ``--shared-data``, default ``$MLIP_SHARED_DATA`` or ``shared/data`` next to
the checkout, see ``mlip.datasets.testing.shared_data_dir``), PubChemQCR-layout
LMDB made from the same frames, OC20-layout extxyz.xz + txt.xz and LMDBs of pickled
Data (the 2021 field set and fairchem's current writer) made from EMT CO/Cu(111)
relaxations, and ASE databases of the same slabs (fairchem's ``.aselmdb`` and an
SQLite ``.db``). Peer: ``ase.io.read(path, ":")`` of the same extxyz (parsing only,
no output).

Streaming (structures/s) over shards of tiled real structures (aspirin, 21
atoms, non-periodic; CO/Cu slabs, 14 atoms, periodic): in-process
``StreamingDataset`` iteration, and torch-geometric ``DataLoader`` batches of
64 with 1 and 2 workers; each with and without a vesin neighbour list (5 Å,
full list, "ijS") per structure. Peer: per-structure random reads through
``HDF5Dataset`` (one h5py read per dataset and structure). Also the effect of
HDF5 compression (none / lzf / gzip) on size and streaming rate.

Every measurement runs in a fresh subprocess (peak RSS = its ``VmHWM``;
workers' peak = ``RUSAGE_CHILDREN`` max RSS, which counts pages shared with the
forked parent), after a warm-up pass (page cache warm);
rates are medians of 3 timed passes. Writes ``benchmarks/results/data.json``,
``data.png`` and the ``data`` section of ``benchmarks/README.md``.

    python benchmarks/data.py            # ~5 minutes on 2 CPU cores
    python benchmarks/data.py --quick    # smaller sets, ~2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _readme import write_readme_section

from mlip.atomic import atomic_path, atomic_write_text

HERE = Path(__file__).resolve().parent
MODE_LABELS = {"in-process": "in-process `StreamingDataset`", "BatchLoader": "`BatchLoader` (batches of 64)",
               "pyg": "peer: torch_geometric `DataLoader` (64)", "random reads": "peer: `HDF5Dataset[i]` random"}
ASPIRIN = ("rmd17", "aspirin_train_01.xyz")  # inside the shared DFT data folder
CUTOFF = 5.0


# -- building inputs ------------------------------------------------------------
def _aspirin_frames(src: Path):
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = ase.io.read(src, ":")
    for a in frames:
        a.calc = SinglePointCalculator(a, energy=a.info["Energy"], forces=a.get_forces())
    return src, frames


def _slab_frames(n_systems: int):
    from mlip.datasets.testing import emt_co_on_cu

    base = [emt_co_on_cu(steps=20, seed=k) for k in range(5)]
    return [(100 + k, base[k % 5]) for k in range(n_systems)]


def build_sources(work: Path, quick: bool, aspirin: Path) -> dict:
    """Write one source per format; returns name -> (format, paths, options)."""
    from mlip.datasets.testing import (
        atoms_to_data,
        pubchemqcr_steps,
        write_ase_db,
        write_aselmdb,
        write_data_lmdb,
        write_oc20_extxyz,
        write_pubchemqcr_lmdb,
    )

    xyz, frames = _aspirin_frames(aspirin)
    n_mol = 100 if quick else 300
    records = {cid: {"pm3": None, "hf": None, "DFT_1st": pubchemqcr_steps(frames[cid % 90: cid % 90 + 10]),
                     "DFT_2nd": None} for cid in range(1, n_mol + 1)}
    pcq = write_pubchemqcr_lmdb(work / "pubchemqcr.lmdb", records)
    systems = _slab_frames(25 if quick else 50)
    refs = {sid: -1.0 for sid, _ in systems}
    oc20x = write_oc20_extxyz(work / "oc20.extxyz", systems, refs, compress=True)
    datas = [atoms_to_data(a, sid, fid) for sid, fr in systems for fid, a in enumerate(fr)]
    oc20l = write_data_lmdb(work / "oc20.lmdb", datas)
    datas = [atoms_to_data(a, sid, fid, layout="fairchem") for sid, fr in systems for fid, a in enumerate(fr)]
    oc20f = write_data_lmdb(work / "oc20_fairchem.lmdb", datas, length_key=False)
    rows = [(a, {"sid": sid, "fid": fid}, {}) for sid, fr in systems for fid, a in enumerate(fr)]
    aselmdb = write_aselmdb(work / "slabs.aselmdb", rows)
    sqlite = write_ase_db(work / "slabs.db", rows)
    return {
        f"extxyz ({xyz.name})": ("extxyz", [str(xyz)], {"pbc": "none"}),
        "pubchemqcr LMDB": ("pubchemqcr", [str(pcq)], {}),
        "oc20 extxyz.xz + txt.xz": ("oc20", [str(oc20x)], {"subtract_reference": True}),
        "oc20 LMDB (pickled Data)": ("oc20", [str(oc20l)], {}),
        "oc20 LMDB (fairchem writer)": ("oc20", [str(oc20f)], {}),
        "asedb .aselmdb": ("asedb", [str(aselmdb)], {}),
        "asedb .db (SQLite)": ("asedb", [str(sqlite)], {}),
    }


def build_stream_sets(work: Path, n: int, aspirin: Path) -> dict:
    """Shards of ``n`` tiled real structures: molecules (aspirin) and slabs (CO/Cu)."""
    from mlip.datasets import ShardWriter
    from mlip.datasets.testing import emt_co_on_cu

    _, frames = _aspirin_frames(aspirin)
    slabs = [a for k in range(5) for a in emt_co_on_cu(steps=20, seed=k)]
    out = {}
    for name, fr, periodic in (("molecules", frames, False), ("slabs", slabs, True)):
        for comp in ("none",) if name == "slabs" else ("none", "lzf", "gzip"):
            path = work / f"{name}-{comp}.h5"
            reps = -(-n // len(fr))
            with ShardWriter(path, compression=comp) as w:
                for r in range(0, reps, 50):  # 50 copies per append: bounded memory
                    k = min(50, reps - r)
                    nat = np.tile([len(a) for a in fr], k)
                    w.append_arrays(
                        positions=np.tile(np.concatenate([a.positions for a in fr]), (k, 1)).astype(np.float32),
                        forces=np.tile(np.concatenate([a.get_forces() for a in fr]), (k, 1)).astype(np.float32),
                        atomic_numbers=np.tile(np.concatenate([a.numbers for a in fr]), k).astype(np.uint8),
                        natoms=nat, energy=np.tile([a.get_potential_energy() for a in fr], k),
                        cell=np.tile(np.stack([a.cell.array for a in fr]), (k, 1, 1)),
                        pbc=np.tile(np.stack([a.pbc if periodic else np.zeros(3, bool) for a in fr]), (k, 1)))
            out[f"{name}-{comp}"] = str(path)
    return out


# -- measurements (each in a child process) -------------------------------------
def _peak_mb() -> float:
    """Peak RSS of this process (VmHWM; unlike ru_maxrss it restarts at exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def _workers_peak_mb() -> float:
    """Largest peak RSS of the finished worker processes (includes pages shared with the parent)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _with_neighbours(d):
    import torch
    import vesin

    nl = getattr(_with_neighbours, "nl", None) or vesin.NeighborList(cutoff=CUTOFF, full_list=True)
    _with_neighbours.nl = nl
    pos = d.pos.numpy().astype(np.float64)
    i, j, s = nl.compute(pos, d.cell[0].numpy(), d.pbc[0].numpy().tolist(), quantities="ijS")
    d.edge_index = torch.from_numpy(np.stack([i, j]).astype(np.int64))
    d.shifts = torch.from_numpy(s.astype(np.int64))
    return d


def _neighbour_dataset(ds):
    import torch

    class WithNeighbours(torch.utils.data.IterableDataset):
        def __iter__(self):
            return map(_with_neighbours, iter(ds))

    return WithNeighbours()


def child_convert(spec: dict) -> dict:
    from mlip.datasets import convert
    from mlip.datasets.sources import SourceOptions

    times = []
    for rep in range(2):
        out = Path(spec["out"]) / f"c{rep}.h5"
        t = time.perf_counter()
        r = convert(spec["fmt"], spec["paths"], out, options=SourceOptions(**spec["options"]), progress=False,
                    overwrite=True)
        times.append(time.perf_counter() - t)
    res = {"n": r.n_structures, "atoms": r.n_atoms, "seconds": min(times), "rate": r.n_structures / min(times)}
    if spec["fmt"] == "extxyz":
        import ase.io

        t = time.perf_counter()
        ase.io.read(spec["paths"][0], ":")
        res["peer_ase_read_rate"] = r.n_structures / (time.perf_counter() - t)
    return res


def child_stream(spec: dict) -> dict:
    import torch
    from torch_geometric.loader import DataLoader

    from mlip.datasets import HDF5Dataset, StreamingDataset
    from mlip.datasets.loader import BatchLoader

    torch.set_num_threads(1)
    n, workers, nl, mode = spec["n"], spec["workers"], spec["nl"], spec["mode"]
    epochs = iter(range(100))
    if mode == "random reads":
        ds = HDF5Dataset(spec["path"])
        idx = np.random.default_rng(0).integers(0, len(ds), n)

        def one_pass():
            for i in idx:
                d = ds[int(i)]
                if nl:
                    _with_neighbours(d)
            return n
    else:
        def one_pass():
            ds = StreamingDataset(spec["path"], seed=0)
            ds.set_epoch(next(epochs))
            count = 0
            if mode == "in-process":
                for d in ds:
                    if nl:
                        _with_neighbours(d)
                    count += 1
                    if count >= n:
                        break
                return count
            if mode == "BatchLoader":  # mlip.datasets.loader
                loader = BatchLoader(ds, 64, num_workers=workers, transform=_with_neighbours if nl else None)
            else:  # "pyg", the peer: torch_geometric's DataLoader
                loader = DataLoader(_neighbour_dataset(ds) if nl else ds, batch_size=64, num_workers=workers)
            for batch in loader:
                count += batch.num_graphs
                if count >= n:
                    break
            return count

    one_pass()  # warm-up (page cache, imports, worker start-up paths)
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        c = one_pass()
        rates.append(c / (time.perf_counter() - t))
    return {"rate": statistics.median(rates), "rates": rates,
            "workers_peak_mb": _workers_peak_mb() if workers else None}


def copy_without_checksums(src: Path, dst: Path) -> Path:
    """The same shard with every dataset written without the fletcher32 filter (as shards were
    before checksums), same chunks, same attributes: the peer of the checksum cost."""
    import h5py

    with h5py.File(src, "r") as f, h5py.File(dst, "w", libver=("v110", "latest")) as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v
        for name, ds in f.items():
            g.create_dataset(name, data=ds[:], chunks=ds.chunks, maxshape=ds.maxshape)
    return dst


def measure_checksums(work: Path, n_set: int, n: int, aspirin: Path) -> list:
    """Read rate with and without fletcher32 checksums: the same molecules, streamed in process
    and read at random (``HDF5Dataset[i]``), each in a fresh child after a warm-up pass."""
    with_sums = build_stream_sets(work, n_set, aspirin)["molecules-none"]
    without = str(copy_without_checksums(Path(with_sums), work / "molecules-nosums.h5"))
    rows = []
    for mode in ("in-process", "random reads"):
        for label, path in (("fletcher32", with_sums), ("none", without)):
            m = n if mode == "in-process" else n // 3
            r = run_child("stream", {"path": path, "mode": mode, "workers": 0, "nl": False, "n": m})
            r.update(checksums=label, mode=mode, n=m)
            rows.append(r)
            print(f"checksums {label:10s} {mode:12s}: {r['rate']:,.0f} structures/s", flush=True)
    for mode in ("in-process", "random reads"):
        on, off = (next(r["rate"] for r in rows if r["mode"] == mode and r["checksums"] == c)
                   for c in ("fletcher32", "none"))
        print(f"checksum cost, {mode}: {100 * (1 - on / off):+.1f} % read rate", flush=True)
    return rows


def run_child(kind: str, spec: dict) -> dict:
    """Run a measurement in a fresh interpreter; adds its peak RSS (MB)."""
    out = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(spec)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"child {kind} {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child_main(kind: str, spec: str) -> None:
    spec = json.loads(spec)
    if kind == "baseline":  # the imports a streaming measurement makes, nothing else
        import torch_geometric.loader  # noqa: F401
        import vesin  # noqa: F401

        import mlip.datasets.loader  # noqa: F401
        res = {}
    else:
        res = {"convert": child_convert, "stream": child_stream}[kind](spec)
    res["peak_mb"] = _peak_mb()
    print(json.dumps(res))


# -- report -----------------------------------------------------------------------
def plot(stream: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in stream if r["compression"] == "none"]
    labels = [f"{r['set']} {r['mode']}{' x' + str(r['workers']) if r['workers'] else ''}{' +NL' if r['nl'] else ''}"
              for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.8), 4.5))
    ax.bar(range(len(rows)), [r["rate"] for r in rows], color=["C1" if r["nl"] else "C0" for r in rows])
    ax.axhline(20_000, color="k", ls="--", lw=1, label="target 20k/s (no NL, per process)")
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("structures / s")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sets (about 2 minutes)")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the README section from the existing JSON without measuring")
    p.add_argument("--shared-data", type=Path, default=None, metavar="DIR",
                   help="the shared DFT data folder holding rmd17/aspirin_train_01.xyz (default: $MLIP_SHARED_DATA, "
                        "else shared/data next to the checkout)")
    p.add_argument("--checksums", action="store_true",
                   help="only measure the read-rate cost of the fletcher32 checksums (same shard with and without "
                        "them); writes results/data-checksums.json, leaves the README alone")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        _child_main(*a.child)
        return 0
    if a.report_only:
        out = HERE / "results" / ("data-quick.json" if a.quick else "data.json")
        write_readme_section("data", report(json.loads(out.read_text()), out.name, out.with_suffix(".png").name))
        return 0
    from mlip.datasets.testing import shared_data_dir  # not at the top: the children's imports stay theirs

    shared = a.shared_data or shared_data_dir()
    aspirin = shared.joinpath(*ASPIRIN) if shared is not None else None
    if aspirin is None or not aspirin.is_file():
        where = aspirin or "no shared DFT data folder found"
        print(f"benchmarks/data.py: {where}: missing; pass --shared-data DIR (the folder holding "
              f"{'/'.join(ASPIRIN)}) or set MLIP_SHARED_DATA", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    n_set = 50_000 if a.quick else 200_000
    n_fast, n_nl = (15_000, 2_000) if a.quick else (45_000, 5_000)
    if a.checksums:
        with tempfile.TemporaryDirectory(prefix="mlip-data-bench-") as tmp:
            rows = measure_checksums(Path(tmp), n_set, n_fast, aspirin)
        meta = {"command": "python benchmarks/data.py --checksums" + (" --quick" if a.quick else ""),
                "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"),
                "seconds": time.perf_counter() - t_start}
        atomic_write_text(HERE / "results" / "data-checksums.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
        return 0
    results = {"meta": {
        "command": "python benchmarks/data.py" + (" --quick" if a.quick else ""),
        "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "load_average_at_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }}
    with tempfile.TemporaryDirectory(prefix="mlip-data-bench-") as tmp:
        work = Path(tmp)
        results["baseline_peak_mb"] = run_child("baseline", {})["peak_mb"]
        print(f"import baseline: {results['baseline_peak_mb']:.0f} MB", flush=True)
        results["convert"] = []
        for name, (fmt, paths, options) in build_sources(work, a.quick, aspirin).items():
            (work / "out").mkdir(exist_ok=True)
            r = run_child("convert", {"fmt": fmt, "paths": paths, "options": options, "out": str(work / "out")})
            r["source"] = name
            results["convert"].append(r)
            print(f"convert {name}: {r['rate']:,.0f} structures/s, peak {r['peak_mb']:.0f} MB", flush=True)
        sets = build_stream_sets(work, n_set, aspirin)
        results["stream"] = []
        plan = []
        for s in ("molecules", "slabs"):
            plan += [(s, "none", "in-process", 0, False), (s, "none", "in-process", 0, True)]
            plan += [(s, "none", "BatchLoader", w, False) for w in (0, 1, 2)]
            plan += [(s, "none", "BatchLoader", w, True) for w in (1, 2)]
            plan += [(s, "none", "pyg", 2, False), (s, "none", "random reads", 0, False)]
        plan += [("molecules", c, m, 0, False) for c in ("lzf", "gzip") for m in ("in-process", "random reads")]
        for s, comp, mode, workers, nl in plan:
            n = n_nl if nl else (n_fast if mode == "in-process" else n_fast // 3)
            r = run_child("stream", {"path": sets[f"{s}-{comp}"], "mode": mode, "workers": workers, "nl": nl, "n": n})
            r.update(set=s, compression=comp, mode=mode, workers=workers, nl=nl, n=n,
                     file_mb=os.path.getsize(sets[f"{s}-{comp}"]) / 1e6)
            results["stream"].append(r)
            print(f"stream {s} {comp} {mode} w={workers} nl={nl}: {r['rate']:,.0f} structures/s, "
                  f"peak {r['peak_mb']:.0f} MB", flush=True)
    results["meta"]["seconds"] = time.perf_counter() - t_start
    results["meta"]["load_average_at_end"] = os.getloadavg()
    out = HERE / "results" / ("data-quick.json" if a.quick else "data.json")
    atomic_write_text(out, json.dumps(results, indent=1))
    png = out.with_suffix(".png")
    plot(results["stream"], png)
    if not a.no_readme:
        write_readme_section("data", report(results, out.name, png.name))
    print(f"wrote {out} and {png}")
    return 0


def report(res: dict, json_name: str, png_name: str) -> str:
    m = res["meta"]
    base = res["baseline_peak_mb"]
    lines = [
        "## Data pipeline (`benchmarks/data.py`)",
        "",
        f"Command: `{m['command']}` ({m['date']}, {m['cores']} CPU cores, Python {m['python']}, "
        f"load average {m['load_average_at_start'][0]:.1f} at start / {m['load_average_at_end'][0]:.1f} at end: "
        "the machine was shared, so rates are lower bounds). Each row ran in a fresh process; rates are "
        f"medians of 3 passes after a warm-up. Peak RSS includes the {base:.0f} MB that importing torch, "
        "torch_geometric and mlip.datasets costs by itself.",
        "",
        "Conversion (one process, writing one HDF5 file):",
        "",
        "| source | structures | atoms | structures/s | peak RSS (MB) | peer: `ase.io.read` structures/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["convert"]:
        peer = f"{r['peer_ase_read_rate']:,.0f}" if "peer_ase_read_rate" in r else "–"
        lines.append(f"| {r['source']} | {r['n']:,} | {r['atoms']:,} | {r['rate']:,.0f} | {r['peak_mb']:.0f} "
                     f"| {peer} |")
    lines += [
        "",
        "Streaming (shards of tiled real structures: molecules = rMD17 aspirin, 21 atoms, non-periodic; slabs = "
        "EMT CO/Cu(111), 14 atoms, periodic). In-process: iterating `StreamingDataset` (shuffled) in the "
        "training process, one `Data` per structure. `BatchLoader` (`mlip.datasets.loader`): batches of 64 "
        "collated by `Batch.from_data_list` in the workers (0 workers: in-process) and sent as numpy arrays. "
        "Neighbour list: vesin (5 Å, full list, `ijS`) per structure, in the workers when there are workers. "
        "Peers: torch_geometric's `DataLoader` (same batches, tensors sent through shared memory) and "
        "per-structure random reads through `HDF5Dataset[i]`.",
        "",
        "| set | mode | workers | neighbour list | structures/s | peak RSS main (MB) "
        "| peak RSS worker (MB, incl. shared) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in res["stream"]:
        if r["compression"] != "none":
            continue
        wk = f"{r['workers_peak_mb']:.0f}" if r["workers_peak_mb"] else "–"
        lines.append(f"| {r['set']} | {MODE_LABELS[r['mode']]} | {r['workers']} | {'yes' if r['nl'] else 'no'} | "
                     f"{r['rate']:,.0f} | {r['peak_mb']:.0f} | {wk} |")
    lines += ["", "Compression (molecules set, no neighbour list; same process and load caveats):", "",
              "| compression | file (MB) | streaming structures/s | random reads structures/s |",
              "|---|---:|---:|---:|"]
    by = {(r["compression"], r["mode"]): r for r in res["stream"] if r["set"] == "molecules" and not r["nl"]}
    for c in ("none", "lzf", "gzip"):
        lines.append(f"| {c} | {by[c, 'in-process']['file_mb']:.1f} | {by[c, 'in-process']['rate']:,.0f} | "
                     f"{by[c, 'random reads']['rate']:,.0f} |")
    fast = [r["rate"] for r in res["stream"]
            if r["mode"] == "in-process" and not r["nl"] and r["compression"] == "none"]
    lines += ["", f"Target: ≥ 20,000 structures/s per process without neighbour lists; measured in-process "
                  f"{min(fast):,.0f}–{max(fast):,.0f} structures/s.",
              "", f"JSON: `benchmarks/results/{json_name}`, plot: `benchmarks/results/{png_name}`.", "",
              f"![data benchmark](results/{png_name})"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
