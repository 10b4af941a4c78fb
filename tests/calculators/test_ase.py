import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

import mlip
from mlip.calculators import MLIPCalculator
from mlip.errors import ConfigError, StructureError
from mlip.kernels.tp import BACKENDS as TP_BACKENDS

#: every registered tensor-product backend
BACKENDS = tuple(TP_BACKENDS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forces_match_finite_differences(h, backend, device):
    calc = MLIPCalculator(h.model(backend, "float64"), device=device)
    for atoms in (h.ethanol(), h.crystal()):
        atoms.calc = calc
        f = atoms.get_forces()
        f_num = calculate_numerical_forces(atoms, eps=1e-5)
        assert np.abs(f).max() > 1e-3
        assert np.abs(f - f_num).max() < 1e-8, backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_stress_matches_finite_differences(h, backend, device):
    atoms = h.crystal()
    atoms.calc = MLIPCalculator(h.model(backend, "float64"), device=device)
    s = atoms.get_stress()
    s_num = calculate_numerical_stress(atoms, eps=1e-5)
    assert s.shape == (6,) and np.abs(s).max() > 1e-5
    assert np.abs(s - s_num).max() < 1e-9, backend


def test_float32_forces_close_to_finite_differences(h):
    atoms = h.crystal()
    atoms.calc = MLIPCalculator(h.model("grid", "float64"), dtype="float32")
    f32 = atoms.get_forces()
    atoms.calc = MLIPCalculator(h.model("grid", "float64"))
    f_num = calculate_numerical_forces(atoms, eps=1e-5)
    assert np.abs(f32 - f_num).max() < 1e-5 * (np.abs(f_num).max() + 1)


def test_properties_agree(h):
    atoms = h.crystal()
    model = h.model("cg")
    atoms.calc = MLIPCalculator(model)
    e = atoms.get_potential_energy()
    assert e == atoms.get_potential_energy(force_consistent=True)
    assert np.isclose(atoms.get_potential_energies().sum(), e)
    out = model(mlip.atoms_to_graph(atoms, model.r_max), stress=True)
    assert np.isclose(out["energy"].item(), e)
    s = out["stress"][0].detach().numpy()
    assert np.allclose(atoms.get_stress(), [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    assert np.allclose(atoms.get_stress(voigt=False), s)


def test_recomputes_only_when_atoms_change(h):
    calc = MLIPCalculator(h.model("cg"))
    calls = []
    forward = calc.model.forward
    calc.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    atoms = h.crystal()
    atoms.calc = calc
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_potential_energies()
    atoms.get_potential_energy()
    assert len(calls) == 1
    atoms.get_stress()  # not computed yet
    atoms.get_stress()
    assert len(calls) == 2
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert len(calls) == 3
    atoms.set_cell(atoms.cell * 1.01, scale_atoms=True)
    atoms.get_potential_energy()
    assert len(calls) == 4


def test_stress_of_a_molecule_is_not_implemented(h):
    atoms = h.ethanol()
    atoms.calc = MLIPCalculator(h.model("cg"))
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="3D periodic"):
        atoms.get_stress()
    slab = bulk("Cu", "fcc", a=3.61, cubic=True)
    slab.pbc = [True, True, False]
    slab.calc = atoms.calc
    assert np.isfinite(slab.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()


def test_from_path_and_dtype(h, tmp_path):
    model = h.model("grid")
    path = mlip.save(model, tmp_path / "m.pt")
    atoms = h.crystal()
    ref = MLIPCalculator(model).get_forces(atoms)
    assert np.array_equal(MLIPCalculator(path).get_forces(atoms), ref)
    assert np.array_equal(MLIPCalculator(str(path)).get_forces(atoms), ref)
    calc32 = MLIPCalculator(path, dtype="float32")
    assert calc32.model.dtype == torch.float32
    assert np.allclose(calc32.get_forces(atoms), ref, atol=1e-5)
    calc32 = MLIPCalculator(model, dtype=torch.float32)  # a copy: the model stays float64
    assert calc32.model.dtype == torch.float32 and model.dtype == torch.float64


def test_bad_input(h, tmp_path):
    calc = MLIPCalculator(h.model("cg"))
    atoms = molecule("H2O")
    atoms.positions[0, 0] = np.nan
    with pytest.raises(StructureError, match="NaN"):
        calc.get_potential_energy(atoms)
    fe = bulk("Fe", "bcc", a=2.87)
    with pytest.raises(StructureError, match="Fe"):
        calc.get_potential_energy(fe)
    with pytest.raises(TypeError):
        MLIPCalculator(42)
    with pytest.raises(FileNotFoundError):
        MLIPCalculator(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="dtype"):
        MLIPCalculator(h.model("cg"), dtype="float16")


def test_low_memory_same_forces_and_model_untouched(h):
    model = h.model("cg", "float64")
    atoms = h.crystal()
    atoms.calc = MLIPCalculator(model)
    f, s = atoms.get_forces(), atoms.get_stress()
    low = MLIPCalculator(model, low_memory=True)
    assert low.model.low_memory and not model.low_memory  # the passed model is not modified
    atoms.calc = low
    assert np.allclose(atoms.get_forces(), f, rtol=0, atol=1e-12)
    assert np.allclose(atoms.get_stress(), s, rtol=0, atol=1e-12)
