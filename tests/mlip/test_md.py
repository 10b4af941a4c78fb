import csv

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.mixing import SumCalculator
from ase.io import read

import mlip
from mlip.calculators import MLIPCalculator
from mlip.md import LOG_COLUMNS, main, run_md


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
                 "--log-every", "--traj", "--log", "--index"):
        assert flag in text


@pytest.mark.parametrize("ensemble", ["nve", "nvt"])
def test_cli_runs(h, tmp_path, model_file, ensemble, capsys):
    traj, log = tmp_path / "md.traj", tmp_path / "md.csv"
    code = main([str(model_file), str(h.data / "ethanol_rmd17_3.xyz"), "--index", "1", "--steps", "20",
                 "--ensemble", ensemble, "--log-every", "5", "--traj", str(traj), "--log", str(log),
                 "--seed", "3", "--no-progress", "--threads", "1"])
    assert code == 0
    frames = read(traj, ":")
    assert len(frames) == 5 and len(frames[0]) == 9
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LOG_COLUMNS and [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20]
    assert all(np.isfinite(float(r["etot_eV"])) for r in rows)
    assert "meV/atom" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, words",
    [
        (["--steps", "-1"], "--steps"),
        (["--timestep", "0"], "--timestep"),
        (["--ensemble", "nvt", "--friction", "0"], "--friction"),
        (["--temperature", "-5"], "--temperature"),
        (["--index", "99"], "cannot read frame"),
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
