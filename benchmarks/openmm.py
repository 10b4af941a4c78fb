"""OpenMM benchmark: cost of one MD step through ``MLIPForce`` against the ASE calculator.

Same model, same structure, same integrator kind (velocity Verlet, 0.5 fs, one force
evaluation per step) on two periodic TIP3P water boxes built by OpenMM's ``Modeller``
(33 and 333 molecules: 99 and 999 atoms):

* ``model``   — the floor both paths pay: ``mlip.build_graph`` (vesin) + ``model(graph)``
  with forces, called directly;
* ``ASE``     — ``ase.md.VelocityVerlet.run(1)`` with :class:`mlip.calculators.MLIPCalculator`;
* ``OpenMM``  — ``VerletIntegrator.step(1)`` of a CPU-platform ``Context`` whose only force is
  :class:`mlip.calculators.openmm.MLIPForce` (an ``openmm.PythonForce``).

The three are timed in rotation (one step of each per round, so a load change on a shared
machine hits all three alike) after a warm-up; the table gives medians. Writes
``benchmarks/results/openmm.json``, ``openmm.png`` and the ``openmm`` section of
``benchmarks/README.md``.

    python benchmarks/openmm.py              # ~1-2 minutes on 2 CPU cores
    python benchmarks/openmm.py --quick      # fewer rounds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _readme import write_readme_section

from mlip.atomic import atomic_path, atomic_write_text

HERE = Path(__file__).resolve().parent
SECTION = "openmm"

# Run as a script, this file's folder is sys.path[0], and `import openmm` would import this
# file instead of OpenMM.
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != HERE]


def water_box(n_molecules: int):
    """TIP3P water (amber14) from ``Modeller.addSolvent(numAdded=...)``: (topology, positions Å, box Å)."""
    import numpy as np
    import openmm.app as app
    from openmm import unit

    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, numAdded=n_molecules, neutralize=False)
    top = modeller.topology
    pos = np.asarray(modeller.positions.value_in_unit(unit.angstrom))
    box = np.asarray(top.getPeriodicBoxVectors().value_in_unit(unit.angstrom))
    return top, pos, box


def measure(model, n_molecules: int, rounds: int, warmup: int, timestep_fs: float, threads: int) -> dict:
    """Per-step times (ms, wall clock and process CPU time) of the three paths on one water box."""
    import openmm
    from ase import Atoms, units
    from ase.md.verlet import VelocityVerlet
    from openmm import unit

    import mlip
    from mlip.calculators import MLIPCalculator
    from mlip.calculators.openmm import MLIPForce

    top, pos, box = water_box(n_molecules)
    numbers = [a.element.atomic_number for a in top.atoms()]
    graph = mlip.build_graph(pos, numbers, r_max=model.r_max, cell=box, pbc=True)

    # ASE
    atoms = Atoms(numbers=numbers, positions=pos, cell=box, pbc=True)
    atoms.calc = MLIPCalculator(model)
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)

    # OpenMM
    mlf = MLIPForce.from_topology(model, top)
    system = openmm.System()
    for a in top.atoms():
        system.addParticle(a.element.mass)
    system.setDefaultPeriodicBoxVectors(*top.getPeriodicBoxVectors())
    mlf.add_to(system)
    integrator = openmm.VerletIntegrator(timestep_fs * unit.femtosecond)
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)})
    ctx.setPositions(pos / 10 * unit.nanometer)

    def model_call():
        g = mlip.build_graph(pos, numbers, r_max=model.r_max, cell=box, pbc=True)
        model(g, forces=True)

    paths = {"model": model_call, "ase": lambda: dyn.run(1), "openmm": lambda: integrator.step(1)}
    # parity before timing: the two paths compute the same energy at the same positions
    e_omm = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    e_ase = atoms.get_potential_energy() * 96.48533212331002
    wall = {k: [] for k in paths}
    cpu = {k: [] for k in paths}
    for r in range(warmup + rounds):
        for name, fn in paths.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            t1, c1 = time.perf_counter(), time.process_time()
            if r >= warmup:
                wall[name].append((t1 - t0) * 1e3)
                cpu[name].append((c1 - c0) * 1e3)
    row = {"molecules": n_molecules, "atoms": len(numbers), "edges": int(graph.edge_index.shape[1]),
           "box_angstrom": float(box[0, 0]), "energy_kj_mol_openmm": e_omm, "energy_kj_mol_ase": e_ase,
           "rounds": rounds}
    for name in paths:
        ts = wall[name]
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        row[name] = {"median_ms": statistics.median(ts), "q1_ms": q[0], "q3_ms": q[2], "all_ms": ts,
                     "cpu_median_ms": statistics.median(cpu[name]), "cpu_all_ms": cpu[name]}
    return row


def plot(rows: list, path: Path) -> None:
    """Bar chart of the median wall-clock ms per step of the three paths, per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.27
    for k, (name, label) in enumerate((("model", "model call (floor)"), ("ase", "ASE VelocityVerlet"),
                                       ("openmm", "OpenMM MLIPForce"))):
        xs = [i + (k - 1) * width for i in range(len(rows))]
        ax.bar(xs, [r[name]["median_ms"] for r in rows], width, label=label)
    ax.set_xticks(range(len(rows)), [f"{r['atoms']} atoms" for r in rows])
    ax.set_ylabel("ms per MD step (median)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def report(res: dict, json_name: str, png_name: str) -> str:
    """The markdown of the README section from the results dict."""
    m = res["meta"]
    c = m["model"]
    lines = [
        "## OpenMM force (`benchmarks/openmm.py`)",
        "",
        f"Command: `{m['command']}` ({m['date']}, {m['cores']} CPU cores, {m['torch_threads']} torch thread(s) and "
        f"OpenMM CPU-platform thread(s), "
        f"Python {m['python']}, torch {m['torch']}, OpenMM {m['openmm']}; load average "
        f"{m['load_average_at_start'][0]:.1f} at start / {m['load_average_at_end'][0]:.1f} at end: the machine was "
        "shared, so times are upper bounds).",
        "",
        f"Model: random weights, {c['dtype']}, {c['num_channels']} channels, l_max {c['l_max']}, correlation "
        f"{c['correlation']}, {c['num_layers']} layers, r_max {c['r_max']} Å, `{c['tp_backend']}` backend. "
        "Systems: periodic TIP3P water boxes from OpenMM's `Modeller.addSolvent(numAdded=...)`. "
        f"One velocity-Verlet step of {m['timestep_fs']} fs (one force evaluation) per call; the three paths are "
        f"timed in rotation, {m['warmup']} warm-up rounds, then the median of the rounds given, by wall clock "
        "and by process CPU time (all threads; steadier than wall time when other jobs share the cores).",
        "",
        "| system | atoms | edges | rounds | model call (ms) | ASE step (ms) | OpenMM step (ms) | OpenMM / ASE | "
        "OpenMM − model (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        for key, label in (("median_ms", "wall"), ("cpu_median_ms", "CPU")):
            mo, a, o = r["model"][key], r["ase"][key], r["openmm"][key]
            lines.append(f"| water, {r['box_angstrom']:.1f} Å box, {label} | {r['atoms']:,} | {r['edges']:,} | "
                         f"{r['rounds']} | {mo:.1f} | {a:.1f} | {o:.1f} | {o / a:.2f} | {o - mo:+.1f} |")
    lines += [
        "",
        "`model call` = `mlip.build_graph` + `model(graph, forces=True)`, what both paths must pay. "
        "`OpenMM − model` is the cost of the OpenMM path beyond that floor (State to numpy, unit conversion, "
        "the integrator); values near zero mean the difference is below the timing noise. "
        "Energies of the two paths at the start agreed to "
        f"{max(abs(r['energy_kj_mol_openmm'] - r['energy_kj_mol_ase']) for r in res['rows']):.2g} kJ/mol.",
        "",
        f"JSON: `benchmarks/results/{json_name}`, plot: `benchmarks/results/{png_name}`.",
        "",
        f"![openmm benchmark](results/{png_name})",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Measure, write the JSON and PNG, rewrite the README section; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds (a smoke test; writes openmm-quick.json)")
    p.add_argument("--molecules", type=int, nargs="+", default=[33, 333], help="water molecules per box")
    p.add_argument("--channels", type=int, default=16, help="model channels")
    p.add_argument("--l-max", type=int, default=1, help="model l_max")
    p.add_argument("--correlation", type=int, default=2, help="model correlation order")
    p.add_argument("--layers", type=int, default=2, help="model layers")
    p.add_argument("--r-max", type=float, default=4.0, help="model cutoff in Å")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads and OpenMM CPU-platform threads (1: steadiest on a shared machine)")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    a = p.parse_args(argv)

    import openmm
    import torch

    import mlip

    config = mlip.PotentialConfig(elements=["H", "O"], r_max=a.r_max, num_channels=a.channels, l_max=a.l_max,
                                  correlation=a.correlation, num_layers=a.layers, dtype=a.dtype)
    model = mlip.Potential(config).eval()
    torch.set_num_threads(a.threads)
    warmup = 2 if a.quick else 3
    command = "python benchmarks/openmm.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    res = {"meta": {
        "command": command.strip(), "date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
        "torch": torch.__version__.split("+")[0], "openmm": openmm.__version__, "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg(),
        "model": config.to_dict(), "timestep_fs": 0.5, "warmup": warmup,
    }, "rows": []}
    for n in a.molecules:
        rounds = (5 if a.quick else 30) if n < 100 else (3 if a.quick else 10)
        row = measure(model, n, rounds, warmup, 0.5, a.threads)
        res["rows"].append(row)
        print(f"{row['atoms']} atoms, ms per step (wall / CPU): " + ", ".join(
            f"{k} {row[k]['median_ms']:.1f} / {row[k]['cpu_median_ms']:.1f}" for k in ("model", "ase", "openmm")),
            flush=True)
    res["meta"]["load_average_at_end"] = os.getloadavg()
    out = HERE / "results" / ("openmm-quick.json" if a.quick else "openmm.json")
    atomic_write_text(out, json.dumps(res, indent=1))
    png = out.with_suffix(".png")
    plot(res["rows"], png)
    if not a.no_readme and not a.quick:
        write_readme_section(SECTION, report(res, out.name, png.name))
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
