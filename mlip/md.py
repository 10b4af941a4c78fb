"""``mlip-md``: molecular dynamics with a trained mlip model, through ASE.

Example::

    mlip-md model.pt ethanol.xyz --steps 2000 --timestep 0.5 --temperature 300 \\
        --ensemble nvt --traj md.traj --log md.csv

Writes an ASE trajectory and a CSV log (step, time in fs, potential, kinetic and total
energy in eV, temperature in K) every ``--log-every`` steps, with a progress bar.

Layers: this module is an entry point (the ``mlip-md`` command), an application above every
layer of mlip, so it may import :mod:`mlip.calculators` (the ASE calculator it runs the model
through), which the model layer itself never does. It imports it inside :func:`main`, so that
``import mlip.md`` stays light.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

from mlip.allocator import add_cli_flag, tune_from_cli
from mlip.errors import ConfigError

__all__ = ["main", "build_parser", "run_md"]

LOG_COLUMNS = ("step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K")


def build_parser() -> argparse.ArgumentParser:
    """The ``mlip-md`` argument parser."""
    p = argparse.ArgumentParser(
        prog="mlip-md",
        description="Run molecular dynamics (ASE) with a trained mlip model on a structure file.",
        epilog="NVE uses velocity Verlet; NVT uses Langevin dynamics. Initial velocities are drawn "
        "from a Maxwell-Boltzmann distribution at --temperature (centre-of-mass motion removed, and "
        "rotation for non-periodic systems); --temperature 0 keeps the velocities in the file (or none).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", type=Path, help="model file written by mlip.save")
    p.add_argument("structure", type=Path,
                   help="structure file, any format ase.io.read reads (xyz, extxyz, cif, POSCAR, traj, ...)")
    p.add_argument("--index", default="0",
                   help="frame of the structure file to start from (ase.io.read index, e.g. 0 or -1)")
    p.add_argument("--format", default=None, help="ase.io file format, if not guessed from the file name")
    p.add_argument("--ensemble", choices=("nve", "nvt"), default="nve",
                   help="nve: velocity Verlet; nvt: Langevin thermostat")
    p.add_argument("--steps", type=int, default=1000, help="number of MD steps")
    p.add_argument("--timestep", type=float, default=0.5, help="time step in fs")
    p.add_argument("--temperature", type=float, default=300.0,
                   help="temperature in K: initial velocities and the NVT target")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs (NVT only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and the Langevin noise")
    p.add_argument("--log-every", type=int, default=10, help="write the log and trajectory every this many steps")
    p.add_argument("--traj", type=Path, default=Path("md.traj"), help="output ASE trajectory file")
    p.add_argument("--log", type=Path, default=Path("md.csv"), help="output CSV log of energies and temperature")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="compute dtype (None: the model's own)")
    p.add_argument("--engine", default="auto",
                   help="how the tensor products run: auto (cuEquivariance on CUDA where available), torch, "
                        "or cuequivariance (cg models only; same numbers)")
    p.add_argument("--low-memory", action="store_true",
                   help="recompute each chunk of edges in the backward pass: about half the memory for "
                        "large systems, somewhat more time, same numbers")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is often fastest for small molecules)")
    add_cli_flag(p)
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return p


def _check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if not a.model.is_file():
        p.error(f"model file {a.model} does not exist")
    if not a.structure.is_file():
        p.error(f"structure file {a.structure} does not exist")
    if a.steps < 0:
        p.error(f"--steps must be >= 0, got {a.steps}")
    if not (a.timestep > 0 and math.isfinite(a.timestep)):
        p.error(f"--timestep must be a positive number of fs, got {a.timestep}")
    if not (a.temperature >= 0 and math.isfinite(a.temperature)):
        p.error(f"--temperature must be >= 0 K, got {a.temperature}")
    if a.ensemble == "nvt" and not (a.friction > 0 and math.isfinite(a.friction)):
        p.error(f"--friction must be > 0 (1/fs) for NVT, got {a.friction}")
    if a.ensemble == "nvt" and a.temperature == 0:
        p.error("--ensemble nvt needs --temperature > 0")
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    if a.log_every < 1:
        p.error(f"--log-every must be >= 1, got {a.log_every}")


def run_md(atoms, calculator, *, ensemble: str = "nve", steps: int = 1000, timestep: float = 0.5,
           temperature: float = 300.0, friction: float = 0.01, seed: int = 0, log_every: int = 10,
           traj=None, log=None, progress: bool = True) -> list[dict]:
    """Run MD on ``atoms`` (modified in place) and return the logged rows.

    Units: ``timestep`` fs, ``temperature`` K, ``friction`` 1/fs. ``traj`` / ``log``:
    optional paths of the ASE trajectory and the CSV log. Each row has :data:`LOG_COLUMNS`.
    """
    from ase import units
    from ase.io import Trajectory
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    atoms.calc = calculator
    if temperature > 0:
        if hasattr(vd, "thermalize_momenta"):  # ase >= 3.26
            vd.thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
        else:  # pragma: no cover
            vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        vd.Stationary(atoms)
        if not atoms.pbc.any() and len(atoms) > 2:
            vd.ZeroRotation(atoms)
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=timestep * units.fs)
    elif ensemble == "nvt":
        from ase.constraints import FixCom

        # the centre of mass is held by a constraint (ASE's recommendation since 3.28)
        if not any(isinstance(c, FixCom) for c in atoms.constraints):
            atoms.set_constraint([*atoms.constraints, FixCom()])
        dyn = Langevin(atoms, timestep=timestep * units.fs, temperature_K=temperature,
                       friction=friction / units.fs, fixcm=False, rng=rng)
    else:
        raise ConfigError(f"ensemble: expected 'nve' or 'nvt', got {ensemble!r}")

    rows: list[dict] = []
    log_file = open(log, "w", newline="") if log is not None else None
    writer = csv.DictWriter(log_file, fieldnames=LOG_COLUMNS) if log_file else None
    if writer:
        writer.writeheader()
    trajectory = Trajectory(str(traj), "w", atoms) if traj is not None else None
    bar = tqdm(total=steps, disable=not progress, unit="step", desc=f"MD {ensemble}", dynamic_ncols=True)

    def record():
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        row = {
            "step": dyn.nsteps,
            "time_fs": dyn.nsteps * timestep,
            "epot_eV": epot,
            "ekin_eV": ekin,
            "etot_eV": epot + ekin,
            "temperature_K": atoms.get_temperature(),
        }
        if not all(math.isfinite(v) for v in row.values()):
            raise FloatingPointError(f"MD step {dyn.nsteps}: non-finite energy or temperature {row}")
        rows.append(row)
        if writer:
            writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in row.items()})
            log_file.flush()
        if trajectory is not None:
            trajectory.write()
        bar.set_postfix(etot=f"{row['etot_eV']:.4f} eV", T=f"{row['temperature_K']:.0f} K", refresh=False)

    def tick():
        if dyn.nsteps:
            bar.update(1)

    dyn.attach(record, interval=log_every)
    dyn.attach(tick, interval=1)
    try:
        dyn.run(steps)
    finally:
        bar.close()
        if trajectory is not None:
            trajectory.close()
        if log_file is not None:
            log_file.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlip-md``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)

    import ase.io
    import torch

    from mlip.calculators import MLIPCalculator

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tune_from_cli(args)

    try:
        atoms = ase.io.read(args.structure, index=args.index, format=args.format)
    except Exception as exc:
        parser.error(f"cannot read frame {args.index} of {args.structure}: {exc}")
    if isinstance(atoms, list):
        parser.error(f"--index {args.index} selects {len(atoms)} frames of {args.structure}; give one frame")
    try:
        calc = MLIPCalculator(args.model, device=args.device, dtype=args.dtype, low_memory=args.low_memory,
                              engine=args.engine)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    rows = run_md(
        atoms, calc, ensemble=args.ensemble, steps=args.steps, timestep=args.timestep,
        temperature=args.temperature, friction=args.friction, seed=args.seed, log_every=args.log_every,
        traj=args.traj, log=args.log, progress=not args.no_progress,
    )
    first, last = rows[0], rows[-1]
    drift = (last["etot_eV"] - first["etot_eV"]) / len(atoms)
    print(
        f"{args.ensemble.upper()}: {last['step']} steps of {args.timestep} fs on {len(atoms)} atoms; "
        f"E_tot {first['etot_eV']:.6f} -> {last['etot_eV']:.6f} eV ({1000 * drift:+.4f} meV/atom), "
        f"T {last['temperature_K']:.1f} K; trajectory {args.traj}, log {args.log}",
        file=sys.stdout,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
