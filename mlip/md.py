"""``mlip-md``: molecular dynamics with a trained mlip model, through ASE.

Example::

    mlip-md model.pt ethanol.xyz --steps 2000 --timestep 0.5 --temperature 300 \\
        --ensemble nvt --thermostat langevin --pbc none --traj md.traj --log md.csv
    mlip-md model.pt crystal.cif --ensemble npt --pressure 1e-4 --taup 1000 --barostat mtk

Writes an ASE trajectory and a CSV log (step, time in fs, potential, kinetic and total
energy in eV, temperature in K; NPT adds the volume in Å^3 and the pressure in GPa) every
``--log-every`` steps, with a progress bar. Every check of the input (files, options, the
structure's elements against the model's, periodicity) happens before an output file is created.

Layers: this module is an entry point (the ``mlip-md`` command), an application above every
layer of mlip, so it may import :mod:`mlip.calculators` (the ASE calculator it runs the model
through) and :mod:`mlip.datasets` (the ``--pbc`` policy it shares with ``mlip-data``), which the
model layer itself never does. It imports them inside :func:`main`, so that ``import mlip.md``
and ``mlip-md --help`` stay light (no torch).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

from mlip.allocator import add_cli_flag, tune_from_cli
from mlip.errors import ConfigError, MLIPError, StructureError

__all__ = ["main", "build_parser", "run_md", "LOG_COLUMNS", "NPT_COLUMNS", "ENSEMBLES", "THERMOSTATS",
           "BAROSTATS"]

LOG_COLUMNS = ("step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K")
#: columns the log adds for NPT
NPT_COLUMNS = ("volume_A3", "pressure_GPa")
ENSEMBLES = ("nve", "nvt", "npt")
#: NVT thermostats: ASE's Langevin, NoseHooverChainNVT and Bussi
THERMOSTATS = ("langevin", "nose-hoover", "bussi")
#: NPT barostats (isotropic): ASE's IsotropicMTKNPT (MTK equations with Nosé-Hoover chains) and NPTBerendsen
BAROSTATS = ("mtk", "berendsen")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: x)`` only where the help does not already say it (no ``None``, no flags)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or isinstance(action.default, bool) or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``mlip-md`` argument parser."""
    p = argparse.ArgumentParser(
        prog="mlip-md",
        description="Run molecular dynamics (ASE) with a trained mlip model on a structure file.",
        epilog="NVE uses velocity Verlet; NVT a thermostat (--thermostat); NPT an isotropic barostat "
        "(--barostat) and needs a 3D periodic structure (the model's stress). Initial velocities are drawn "
        "from a Maxwell-Boltzmann distribution at --temperature (centre-of-mass motion removed, and "
        "rotation for non-periodic systems); --temperature 0 keeps the velocities in the file (or none). "
        "Units: fs, K, GPa, eV, Å.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("model", type=Path, help="model file written by mlip.save (a training run's model.pt)")
    p.add_argument("structure", type=Path,
                   help="structure file, any format ase.io.read reads (xyz, extxyz, cif, POSCAR, traj, ...)")
    p.add_argument("--index", default="0",
                   help="frame of the structure file to start from (ase.io.read index, e.g. 0 or -1)")
    p.add_argument("--format", default=None, help="ase.io file format (default: guessed from the file name)")
    p.add_argument("--pbc", choices=("auto", "none", "all"), default="auto",
                   help="periodicity, as in mlip-data convert: auto: as ASE reads the file (an extxyz Lattice "
                        "without a pbc key counts as periodic; a note is printed); none: non-periodic (e.g. "
                        "rMD17's 50 A box); all: periodic in 3D (the file must have a cell)")
    p.add_argument("--ensemble", choices=ENSEMBLES, default="nve",
                   help="nve: velocity Verlet; nvt: --thermostat; npt: --barostat (3D periodic structures only)")
    p.add_argument("--steps", type=int, default=1000, help="number of MD steps")
    p.add_argument("--timestep", type=float, default=0.5, help="time step in fs")
    p.add_argument("--temperature", type=float, default=300.0,
                   help="temperature in K: initial velocities and the NVT/NPT target")
    t = p.add_argument_group("thermostat and barostat")
    t.add_argument("--thermostat", choices=THERMOSTATS, default=None,
                   help="NVT only (default langevin): langevin (--friction), nose-hoover (a Nosé-Hoover chain, "
                        "--taut) or bussi (stochastic velocity rescaling, --taut)")
    t.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs")
    t.add_argument("--taut", type=float, default=100.0,
                   help="thermostat time constant in fs (nose-hoover, bussi and both barostats)")
    t.add_argument("--barostat", choices=BAROSTATS, default="mtk",
                   help="NPT only: mtk (isotropic Martyna-Tobias-Klein, samples NPT) or berendsen (isotropic "
                        "Berendsen: fast to equilibrate, does not sample NPT)")
    t.add_argument("--pressure", type=float, default=1e-4, help="NPT target pressure in GPa (1 bar = 1e-4 GPa)")
    t.add_argument("--taup", type=float, default=1000.0, help="NPT barostat time constant in fs")
    t.add_argument("--compressibility", type=float, default=0.01,
                   help="Berendsen barostat only: compressibility in 1/GPa (0.01: a bulk modulus of 100 GPa)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and the thermostat noise")
    p.add_argument("--log-every", type=int, default=10, help="write the log and trajectory every this many steps")
    p.add_argument("--traj", type=Path, default=Path("md.traj"), help="output ASE trajectory file")
    p.add_argument("--log", type=Path, default=Path("md.csv"), help="output CSV log of energies and temperature")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="compute dtype (default: the model's own)")
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


class _InputError(Exception):
    """A bad input found after parsing: ``mlip-md: error: <message>`` on one line, exit status 2."""


def _positive(p, name: str, value: float, unit: str) -> None:
    if not (value > 0 and math.isfinite(value)):
        p.error(f"{name} must be a positive number of {unit}, got {value}")


def _check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.model.is_dir():
        hint = a.model / "model.pt"
        raise _InputError(f"model {a.model} is a directory, not a model file"
                          + (f"; did you mean {hint}?" if hint.is_file() else ""))
    if not a.model.is_file():
        raise _InputError(f"model file {a.model} does not exist")
    if not a.structure.is_file():
        raise _InputError(f"structure file {a.structure} "
                          + ("is a directory" if a.structure.is_dir() else "does not exist"))
    if a.steps < 0:
        p.error(f"--steps must be >= 0, got {a.steps}")
    _positive(p, "--timestep", a.timestep, "fs")
    if not (a.temperature >= 0 and math.isfinite(a.temperature)):
        p.error(f"--temperature must be >= 0 K, got {a.temperature}")
    if a.thermostat is not None and a.ensemble != "nvt":
        p.error(f"--thermostat applies to --ensemble nvt (NPT uses its barostat's own thermostat), "
                f"got --ensemble {a.ensemble}")
    if a.ensemble == "nvt" and a.thermostat is None:
        a.thermostat = "langevin"
    if a.ensemble == "nvt" and a.thermostat == "langevin":
        _positive(p, "--friction (NVT, Langevin)", a.friction, "1/fs")
    if a.ensemble in ("nvt", "npt"):
        if a.temperature == 0:
            p.error(f"--ensemble {a.ensemble} needs --temperature > 0")
        _positive(p, "--taut", a.taut, "fs")
    if a.ensemble == "npt":
        _positive(p, "--taup", a.taup, "fs")
        if not math.isfinite(a.pressure):
            p.error(f"--pressure must be a finite number of GPa, got {a.pressure}")
        if a.barostat == "berendsen":
            _positive(p, "--compressibility", a.compressibility, "1/GPa")
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    if a.log_every < 1:
        p.error(f"--log-every must be >= 1, got {a.log_every}")


def _make_dynamics(atoms, ensemble: str, *, timestep: float, temperature: float, thermostat: str,
                   friction: float, taut: float, barostat: str, pressure: float, taup: float,
                   compressibility: float, rng):
    """The ASE dynamics object (units: fs, K, 1/fs, GPa, 1/GPa; converted to ASE's here)."""
    from ase import units

    dt = timestep * units.fs
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if ensemble == "nvt":
        if thermostat == "langevin":
            from ase.constraints import FixCom
            from ase.md.langevin import Langevin

            # the centre of mass is held by a constraint (ASE's recommendation since 3.28)
            if not any(isinstance(c, FixCom) for c in atoms.constraints):
                atoms.set_constraint([*atoms.constraints, FixCom()])
            return Langevin(atoms, timestep=dt, temperature_K=temperature, friction=friction / units.fs,
                            fixcm=False, rng=rng)
        if thermostat == "nose-hoover":
            from ase.md.nose_hoover_chain import NoseHooverChainNVT

            return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=temperature, tdamp=taut * units.fs)
        if thermostat == "bussi":
            from ase.md.bussi import Bussi

            return Bussi(atoms, timestep=dt, temperature_K=temperature, taut=taut * units.fs, rng=rng)
        raise ConfigError(f"thermostat: expected one of {THERMOSTATS}, got {thermostat!r}")
    if ensemble == "npt":
        if barostat == "mtk":
            from ase.md.nose_hoover_chain import IsotropicMTKNPT

            return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=temperature, pressure_au=pressure * units.GPa,
                                   tdamp=taut * units.fs, pdamp=taup * units.fs)
        if barostat == "berendsen":
            from ase.md.nptberendsen import NPTBerendsen

            return NPTBerendsen(atoms, timestep=dt, temperature_K=temperature, pressure_au=pressure * units.GPa,
                                taut=taut * units.fs, taup=taup * units.fs,
                                compressibility_au=compressibility / units.GPa)
        raise ConfigError(f"barostat: expected one of {BAROSTATS}, got {barostat!r}")
    raise ConfigError(f"ensemble: expected one of {ENSEMBLES}, got {ensemble!r}")


def run_md(atoms, calculator, *, ensemble: str = "nve", steps: int = 1000, timestep: float = 0.5,
           temperature: float = 300.0, thermostat: str = "langevin", friction: float = 0.01,
           taut: float = 100.0, barostat: str = "mtk", pressure: float = 1e-4, taup: float = 1000.0,
           compressibility: float = 0.01, seed: int = 0, log_every: int = 10, traj=None, log=None,
           progress: bool = True) -> list[dict]:
    """Run MD on ``atoms`` (modified in place) and return the logged rows.

    Units: ``timestep``, ``taut`` (thermostat), ``taup`` (barostat) fs; ``temperature`` K;
    ``friction`` 1/fs (Langevin); ``pressure`` GPa; ``compressibility`` 1/GPa (Berendsen).
    ``ensemble``: one of :data:`ENSEMBLES`; ``thermostat`` (NVT): one of :data:`THERMOSTATS`;
    ``barostat`` (NPT): one of :data:`BAROSTATS`. ``traj`` / ``log``: optional paths of the
    ASE trajectory and the CSV log. Each row has :data:`LOG_COLUMNS` (NPT: and :data:`NPT_COLUMNS`).

    The first energy (and, for NPT, stress) is computed before any file is opened, so a
    structure the model refuses leaves no output behind.

    Raises:
        mlip.errors.StructureError: NPT on atoms that are not periodic in 3D, or a structure
            the model refuses (unknown element, ...).
        mlip.errors.ConfigError: an unknown ensemble, thermostat or barostat.
        FloatingPointError: a non-finite energy or temperature during the run.
    """
    from ase import units
    from ase.io import Trajectory
    from ase.md import velocitydistribution as vd
    from tqdm import tqdm

    if ensemble not in ENSEMBLES:
        raise ConfigError(f"ensemble: expected one of {ENSEMBLES}, got {ensemble!r}")
    npt = ensemble == "npt"
    if npt and not atoms.pbc.all():
        raise StructureError(f"NPT needs a structure periodic in 3D (it changes the cell under the model's "
                             f"stress); these atoms have pbc={atoms.pbc.tolist()}")
    rng = np.random.default_rng(seed)
    atoms.calc = calculator
    atoms.get_potential_energy()  # refuse what the model cannot handle before writing anything
    if npt:
        atoms.get_stress()
    if temperature > 0:
        if hasattr(vd, "thermalize_momenta"):  # ase >= 3.26
            vd.thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
        else:  # pragma: no cover
            vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        vd.Stationary(atoms)
        if not atoms.pbc.any() and len(atoms) > 2:
            vd.ZeroRotation(atoms)
    dyn = _make_dynamics(atoms, ensemble, timestep=timestep, temperature=temperature, thermostat=thermostat,
                         friction=friction, taut=taut, barostat=barostat, pressure=pressure, taup=taup,
                         compressibility=compressibility, rng=rng)

    columns = LOG_COLUMNS + (NPT_COLUMNS if npt else ())
    rows: list[dict] = []
    log_file = open(log, "w", newline="") if log is not None else None
    writer = csv.DictWriter(log_file, fieldnames=columns) if log_file else None
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
        if npt:
            row["volume_A3"] = atoms.get_volume()
            stress = atoms.get_stress(include_ideal_gas=True)
            row["pressure_GPa"] = -float(np.mean(stress[:3])) / units.GPa
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


def _frame_has_pbc_key(path: Path, index: str) -> bool:
    """Whether frame ``index`` of an (ext)xyz file says ``pbc=`` on its comment line (True if unknown)."""
    from collections import deque

    from mlip.datasets.sources.xyz_frames import iter_frames, parse_frame

    try:
        i = int(index)
        frames = iter_frames(path)
        raw = next((r for r in frames if r.index == i), None) if i >= 0 else deque(frames, maxlen=-i)[0]
        return True if raw is None else parse_frame(path, raw).pbc_explicit
    except (ValueError, IndexError, MLIPError):
        return True


def _apply_pbc(atoms, path: Path, index: str, policy: str) -> str | None:
    """Set ``atoms.pbc`` by ``--pbc`` (mlip-data's policy); returns mlip-data's note, or None."""
    from mlip.datasets.sources.extxyz import implicit_pbc_note, is_xyz, resolve_pbc

    explicit = not (policy == "auto" and atoms.pbc.any() and is_xyz(path)) or _frame_has_pbc_key(path, index)
    pbc, implicit = resolve_pbc(atoms.pbc.copy(), explicit, policy)
    if pbc.all() and atoms.cell.rank < 3:
        raise _InputError(f"--pbc {policy}: {path} frame {index} has no 3D cell "
                          f"(cell lengths {np.round(atoms.cell.lengths(), 4).tolist()} Å)")
    atoms.pbc = pbc
    return implicit_pbc_note(1) if implicit else None


def _read_structure(a: argparse.Namespace):
    import ase.io

    try:
        atoms = ase.io.read(a.structure, index=a.index, format=a.format)
    except Exception as exc:  # noqa: BLE001 - ase.io raises many kinds
        raise _InputError(f"cannot read frame {a.index} of {a.structure}: {exc}") from None
    if isinstance(atoms, list):
        raise _InputError(f"--index {a.index} selects {len(atoms)} frames of {a.structure}; give one frame")
    return atoms


def _prepare(a: argparse.Namespace):
    """Everything that can fail on the input, before any output exists: (atoms, calculator)."""
    from mlip.calculators import MLIPCalculator
    from mlip.calculators.elements import check_elements

    atoms = _read_structure(a)
    note = _apply_pbc(atoms, a.structure, a.index, a.pbc)
    if note:
        print(f"mlip-md: note: {note}", file=sys.stderr)
    if a.ensemble == "npt" and not atoms.pbc.all():
        raise _InputError(f"--ensemble npt needs a structure periodic in 3D (the barostat changes the cell "
                          f"under the model's stress); {a.structure} frame {a.index} has pbc={atoms.pbc.tolist()}"
                          + (" (--pbc none)" if a.pbc == "none" else ""))
    try:
        calc = MLIPCalculator(a.model, device=a.device, dtype=a.dtype, low_memory=a.low_memory,
                              engine=a.engine)
    except (ValueError, FileNotFoundError) as exc:
        raise _InputError(str(exc)) from None
    try:
        check_elements(atoms.numbers, calc.model.elements)
    except StructureError as exc:
        raise _InputError(f"{a.structure} frame {a.index} does not fit model {a.model}: {exc}") from None
    return atoms, calc


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlip-md``; returns the exit status (2: bad input, 1: the run failed).

    Option errors print the usage; errors in the files (a missing model, a structure with an
    element the model lacks, NPT on a non-periodic structure) print one line; neither leaves
    an output file behind.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_args(parser, args)
        import torch

        if args.threads is not None:
            torch.set_num_threads(args.threads)
        tune_from_cli(args, device=args.device)
        atoms, calc = _prepare(args)
        rows = run_md(
            atoms, calc, ensemble=args.ensemble, steps=args.steps, timestep=args.timestep,
            temperature=args.temperature, thermostat=args.thermostat or "langevin", friction=args.friction,
            taut=args.taut, barostat=args.barostat, pressure=args.pressure, taup=args.taup,
            compressibility=args.compressibility, seed=args.seed, log_every=args.log_every,
            traj=args.traj, log=args.log, progress=not args.no_progress,
        )
    except (_InputError, MLIPError) as exc:
        print(f"mlip-md: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except FloatingPointError as exc:
        print(f"mlip-md: error: {exc}; the trajectory and log hold the steps before it", file=sys.stderr)
        return 1
    first, last = rows[0], rows[-1]
    drift = (last["etot_eV"] - first["etot_eV"]) / len(atoms)
    method = {"nvt": f" ({args.thermostat})", "npt": f" ({args.barostat})"}.get(args.ensemble, "")
    label = args.ensemble.upper() + method
    volume = f", V {last['volume_A3']:.2f} Å^3, P {last['pressure_GPa']:.4g} GPa" if args.ensemble == "npt" else ""
    print(
        f"{label}: {last['step']} steps of {args.timestep} fs on {len(atoms)} atoms; "
        f"E_tot {first['etot_eV']:.6f} -> {last['etot_eV']:.6f} eV ({1000 * drift:+.4f} meV/atom), "
        f"T {last['temperature_K']:.1f} K{volume}; trajectory {args.traj}, log {args.log}",
        file=sys.stdout,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
