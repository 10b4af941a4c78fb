import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.mixing import SumCalculator
from ase.io import read, write

import mlip
from mlip.calculators import MLIPCalculator
from mlip.errors import StructureError
from mlip.md import LOG_COLUMNS, NPT_COLUMNS, main, run_md


class ElasticNetwork(Calculator):
    """Springs between all atom pairs at their starting lengths (20 eV/Å^2 for bonds shorter
    than 1.7 Å, 2 eV/Å^2 otherwise): keeps a molecule bound. A random-weight potential alone
    lets the molecule fly apart (or, briefly fitted, sometimes collapse), which says nothing
    about energy conservation."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, positions, **kwargs):
        super().__init__(**kwargs)
        self.d0 = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        self.k = np.where(self.d0 < 1.7, 20.0, 2.0)
        self.iu = np.triu_indices(len(positions), 1)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = self.atoms.positions
        d = x[:, None] - x[None]
        r = np.linalg.norm(d, axis=-1)
        np.fill_diagonal(r, 1.0)
        dr = r - self.d0
        np.fill_diagonal(dr, 0.0)
        e = 0.5 * (self.k * dr**2)[self.iu].sum()
        self.results = {"energy": e, "free_energy": e, "forces": -((self.k * dr / r)[:, :, None] * d).sum(axis=1)}


def test_nve_conserves_energy(h):
    """2,000 steps of 0.5 fs, float64, ethanol at 300 K: |E_tot(t) - E_tot(0)| < 1 meV/atom.

    Potential: the random-weight model (forces of ~1 eV/Å, as large as the thermal spring
    forces) plus :class:`ElasticNetwork`, which keeps the molecule together."""
    atoms = h.ethanol()
    model = h.model("cg", "float64", l_max=1)
    mlip_calc = MLIPCalculator(model)
    calc = SumCalculator([mlip_calc, ElasticNetwork(atoms.positions.copy())])
    f_model = mlip_calc.get_forces(atoms)
    assert np.abs(f_model).max() > 0.3  # the model's forces matter
    rows = run_md(atoms, calc, ensemble="nve", steps=2000, timestep=0.5, temperature=300.0, seed=1,
                  log_every=20, progress=False)
    etot = np.array([r["etot_eV"] for r in rows])
    n = len(atoms)
    drift = abs(etot[-1] - etot[0]) / n
    excursion = np.abs(etot - etot[0]).max() / n
    print(f"NVE drift {1e3 * drift:.4f} meV/atom, max excursion {1e3 * excursion:.4f} meV/atom")
    assert len(rows) == 101 and rows[-1]["step"] == 2000
    assert max(r["temperature_K"] for r in rows) > 100  # it really moved
    assert drift < 1e-3 and excursion < 1e-3


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = mlip.Potential(mlip.PotentialConfig(elements=["H", "C", "O"], num_channels=4, l_max=1,
                                                radial_mlp=[8], energy_scale=0.1))
    return mlip.save(model, tmp_path_factory.mktemp("md") / "model.pt")


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--steps", "--timestep", "--temperature", "--friction", "--ensemble", "--seed",
                 "--log-every", "--traj", "--log", "--index", "--pbc", "--thermostat", "--barostat",
                 "--pressure", "--taup", "--taut"):
        assert flag in text
    # each option states its default once, and never as "None"
    options = " ".join(text.split()).split(" --")
    assert "(default: None)" not in " ".join(text.split())
    assert not [o for o in options if o.count("(default") > 1]
    assert "GPa" in text and "{langevin,nose-hoover,bussi}" in text


@pytest.mark.parametrize("ensemble", ["nve", "nvt", "nvt:nose-hoover", "nvt:bussi"])
def test_cli_runs(h, tmp_path, model_file, ensemble, capsys, device):
    ensemble, _, thermostat = ensemble.partition(":")
    traj, log = tmp_path / "md.traj", tmp_path / "md.csv"
    code = main([str(model_file), str(h.data / "ethanol_rmd17_3.xyz"), "--index", "1", "--steps", "20",
                 "--ensemble", ensemble, "--log-every", "5", "--traj", str(traj), "--log", str(log),
                 "--seed", "3", "--no-progress", "--threads", "1", "--pbc", "none", "--device", str(device),
                 *(["--thermostat", thermostat, "--taut", "10"] if thermostat else [])])
    assert code == 0
    frames = read(traj, ":")
    assert len(frames) == 5 and len(frames[0]) == 9
    assert not frames[0].pbc.any()  # --pbc none
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LOG_COLUMNS and [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20]
    assert all(np.isfinite(float(r["etot_eV"])) for r in rows)
    out = capsys.readouterr().out
    assert "meV/atom" in out
    assert f"{ensemble.upper()} ({thermostat or 'langevin'})" in out if ensemble == "nvt" else "NVE:" in out


def test_thermostats_differ(h, model_file):
    """Each --thermostat runs its own dynamics: from the same start and seed, NVE and the three
    NVT thermostats give four different trajectories."""
    model = mlip.load(model_file)
    finals = {}
    for ensemble, thermostat in (("nve", "langevin"), ("nvt", "langevin"), ("nvt", "nose-hoover"), ("nvt", "bussi")):
        atoms = h.ethanol()
        rows = run_md(atoms, MLIPCalculator(model), ensemble=ensemble, thermostat=thermostat, steps=40,
                      timestep=0.5, temperature=600.0, friction=0.2, taut=5.0, seed=2, log_every=40,
                      progress=False)
        assert np.isfinite(rows[-1]["etot_eV"])
        finals[(ensemble, thermostat)] = (atoms.positions.copy(), rows[-1]["temperature_K"])
    keys = list(finals)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert not np.allclose(finals[a][0], finals[b][0], atol=1e-6), (a, b)


def crystal_file(h, tmp_path) -> Path:
    """The 8-atom sheared periodic test crystal with H, C, O only (Cu -> C), written with pbc."""
    atoms = h.crystal()
    atoms.numbers[atoms.numbers == 29] = 6
    path = tmp_path / "crystal.xyz"
    write(path, atoms)
    return path


@pytest.mark.parametrize("barostat, pressure, grows", [("mtk", "5", False), ("berendsen", "-5", True)])
def test_cli_npt(h, tmp_path, model_file, barostat, pressure, grows, capsys):
    """NPT (both barostats) on a periodic crystal: the volume follows the sign of the pressure
    difference (the random model's own pressure is about 0.4 GPa), the log has volume and pressure."""
    traj, log = tmp_path / "md.traj", tmp_path / "md.csv"
    assert main([str(model_file), str(crystal_file(h, tmp_path)), "--ensemble", "npt", "--barostat", barostat,
                 "--pressure", pressure, "--taup", "50", "--taut", "50", "--steps", "20", "--log-every", "5",
                 "--traj", str(traj), "--log", str(log), "--no-progress", "--threads", "1"]) == 0
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LOG_COLUMNS + NPT_COLUMNS and len(rows) == 5
    volume = np.array([float(r["volume_A3"]) for r in rows])
    assert np.isfinite(volume).all() and np.isfinite([float(r["pressure_GPa"]) for r in rows]).all()
    assert np.all(np.diff(volume) > 0) if grows else np.all(np.diff(volume) < 0), volume
    frames = read(traj, ":")
    assert frames[-1].get_volume() == pytest.approx(volume[-1], rel=1e-6)
    assert f"NPT ({barostat})" in capsys.readouterr().out


def test_run_md_refuses_npt_without_periodicity(h, tmp_path, model_file):
    """NPT needs the model's stress: a molecule is refused before any file is created."""
    atoms = h.ethanol()
    with pytest.raises(StructureError, match="NPT needs a structure periodic in 3D"):
        run_md(atoms, MLIPCalculator(mlip.load(model_file)), ensemble="npt", steps=2,
               traj=tmp_path / "t.traj", log=tmp_path / "l.csv", progress=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args, words",
    [
        (["--steps", "-1"], "--steps"),
        (["--timestep", "0"], "--timestep"),
        (["--ensemble", "nvt", "--friction", "0"], "--friction"),
        (["--temperature", "-5"], "--temperature"),
        (["--index", "99"], "cannot read frame"),
        (["--thermostat", "bussi"], "--thermostat applies to --ensemble nvt"),
        (["--ensemble", "npt", "--taup", "0"], "--taup"),
        (["--ensemble", "npt", "--barostat", "berendsen", "--compressibility", "-1"], "--compressibility"),
        (["--ensemble", "nvt", "--thermostat", "nose-hoover", "--taut", "nan"], "--taut"),
    ],
)
def test_cli_rejects_bad_options(h, tmp_path, model_file, args, words, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(model_file), str(h.data / "ethanol_rmd17_3.xyz"), "--traj", str(tmp_path / "t.traj"),
              "--log", str(tmp_path / "l.csv"), *args])
    assert e.value.code == 2
    assert words in capsys.readouterr().err


def test_cli_missing_files(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "none.pt"), str(tmp_path / "none.xyz")])
    assert "does not exist" in capsys.readouterr().err


def test_cli_low_memory_gives_the_same_trajectory(h, tmp_path, model_file):
    """``--low-memory`` changes memory use, not the numbers: the same NVE trajectory."""
    runs = []
    for extra in ([], ["--low-memory"]):
        traj = tmp_path / f"md{len(extra)}.traj"
        assert main([str(model_file), str(h.data / "ethanol_rmd17_3.xyz"), "--steps", "10", "--log-every", "5",
                     "--traj", str(traj), "--log", str(tmp_path / f"md{len(extra)}.csv"), "--seed", "1",
                     "--no-progress", "--threads", "1", *extra]) == 0
        runs.append(read(traj, ":"))
    assert len(runs[0]) == len(runs[1]) == 3
    for a, b in zip(*runs):
        assert np.allclose(a.positions, b.positions, rtol=0, atol=1e-9)


# -- the real entry point, in a subprocess ---------------------------------------------------------
def mlip_md(*args, cwd):
    """Run the installed ``mlip-md`` (or ``python -m mlip.md``) in ``cwd``; returns the CompletedProcess."""
    script = Path(sys.executable).with_name("mlip-md")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mlip.md"]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_entry_point_unknown_element_is_one_line_and_writes_nothing(tmp_path, model_file):
    """A structure with an element the model lacks: one line naming it (exit 2), no md.csv/md.traj."""
    structure = tmp_path / "nao.xyz"
    structure.write_text("3\n\nO 0 0 0\nNa 0 0 1.5\nH 0 1 0\n")
    r = mlip_md(model_file, structure, "--steps", "2", "--threads", "1", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "unknown element(s) ['Na'] at atom(s) [1]" in r.stderr and "['H', 'C', 'O']" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nao.xyz"]


def test_entry_point_model_directory_and_npt_without_cell(h, tmp_path, model_file):
    """A training run's directory as the model: it says so and points at its model.pt; NPT on a
    molecule (--pbc none) is refused in one line; neither leaves a file behind."""
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    r = mlip_md(run, h.data / "ethanol_rmd17_3.xyz", cwd=tmp_path)
    assert r.returncode == 2 and "is a directory, not a model file" in r.stderr and "did you mean" not in r.stderr
    shutil.copy(model_file, run / "model.pt")
    r = mlip_md(run, h.data / "ethanol_rmd17_3.xyz", cwd=tmp_path)
    assert r.returncode == 2 and f"did you mean {run / 'model.pt'}?" in r.stderr
    assert "does not exist" not in r.stderr
    r = mlip_md(model_file, h.data / "ethanol_rmd17_3.xyz", "--ensemble", "npt", "--pbc", "none", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--ensemble npt needs a structure periodic in 3D" in r.stderr and "pbc=[False, False, False]" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_pbc_auto_notes_an_implicit_lattice(h, tmp_path, model_file, capsys):
    """--pbc auto on an rMD17 frame (Lattice, no pbc key) runs periodic and prints mlip-data's note;
    --pbc none runs it as a molecule without the note; an explicit pbc key gets no note."""
    from mlip.datasets.sources.extxyz import implicit_pbc_note

    common = ["--steps", "0", "--no-progress", "--threads", "1", "--log", str(tmp_path / "l.csv")]
    assert main([str(model_file), str(h.data / "ethanol_rmd17_3.xyz"), "--traj", str(tmp_path / "a.traj"),
                 *common]) == 0
    assert implicit_pbc_note(1) in capsys.readouterr().err
    assert read(tmp_path / "a.traj").pbc.all()
    assert main([str(model_file), str(h.data / "ethanol_rmd17_3.xyz"), "--traj", str(tmp_path / "b.traj"),
                 "--pbc", "none", *common]) == 0
    assert "pbc key" not in capsys.readouterr().err
    assert not read(tmp_path / "b.traj").pbc.any()
    assert main([str(model_file), str(crystal_file(h, tmp_path)), "--traj", str(tmp_path / "c.traj"), *common]) == 0
    assert "pbc key" not in capsys.readouterr().err
    plain = tmp_path / "plain.xyz"  # no Lattice: --pbc all has no cell to use
    plain.write_text("3\n\nO 0 0 0\nC 0 0 1.5\nH 0 1 0\n")
    with pytest.raises(SystemExit) as e:
        main([str(model_file), str(plain), "--pbc", "all", "--traj", str(tmp_path / "d.traj"), *common])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--pbc all" in err and "no 3D cell" in err
    assert not (tmp_path / "d.traj").exists()
