"""OpenMM force (``mlip.calculators.openmm``) and the openmm-ml ``"mlip"`` potential.

Every test runs a real ``openmm.Context`` (Reference platform where numbers are compared
to the ASE calculator in float64, CPU platform for the dynamics) on small random-weight
models (8 channels, l_max 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

openmm = pytest.importorskip("openmm")
app = pytest.importorskip("openmm.app")
pytest.importorskip("openmmml")

import ase.io  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.neighborlist import neighbor_list  # noqa: E402
from openmm import unit  # noqa: E402
from openmmml import MLPotential  # noqa: E402

import mlip  # noqa: E402
from mlip.calculators import MLIPCalculator  # noqa: E402
from mlip.calculators.openmm import EV_TO_KJ_PER_MOL, MLIPForce  # noqa: E402
from mlip.errors import CheckpointError, ConfigError, StructureError  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
ELEMENTS = ["H", "C", "N", "O"]
KJ = unit.kilojoule_per_mole
KJ_NM = unit.kilojoule_per_mole / unit.nanometer


def make_model(dtype="float64", num_layers=2, energy_scale=1.0, seed=0) -> mlip.Potential:
    """8 channels, l_max 1, correlation 2, r_max 4 Å."""
    return mlip.Potential(mlip.PotentialConfig(
        elements=ELEMENTS, r_max=4.0, num_channels=8, l_max=1, correlation=2, num_layers=num_layers,
        radial_mlp=[16, 16], energy_scale=energy_scale, dtype=dtype, seed=seed)).eval()


@pytest.fixture(scope="module")
def model():
    """Two layers, float64: for the comparisons with ASE."""
    return make_model()


@pytest.fixture(scope="module")
def md_model_path(tmp_path_factory):
    """One layer, learned energy scaled by 0.3 (a gentler random surface for dynamics), on disk."""
    return mlip.save(make_model(num_layers=1, energy_scale=0.3), tmp_path_factory.mktemp("openmm") / "md.pt")


def ethanol() -> Atoms:
    """rMD17 ethanol (tests/data), 9 atoms, as a molecule (no cell, no periodicity)."""
    atoms = ase.io.read(DATA / "ethanol_rmd17_3.xyz", index=0)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    atoms.calc = None
    return atoms


def periodic_box(n=20, seed=0) -> Atoms:
    """``n`` random H/C/N/O atoms in a triclinic cell in OpenMM's reduced form (7.5 Å < 2 r_max)."""
    cell = np.array([[7.5, 0.0, 0.0], [1.5, 7.0, 0.0], [-1.0, 2.0, 7.2]])
    rng = np.random.default_rng(seed)
    atoms = Atoms(cell=cell, pbc=True)
    while len(atoms) < n:
        trial = atoms + Atoms(ELEMENTS[len(atoms) % 4], positions=[rng.random(3) @ cell], cell=cell, pbc=True)
        if len(trial) == 1 or trial.get_distances(len(trial) - 1, range(len(trial) - 1), mic=True).min() > 1.1:
            atoms = trial
    atoms.positions[::3] += cell[0] - 2 * cell[2]  # some atoms outside the cell: same structure
    return atoms


def topology_of(numbers, box=None) -> app.Topology:
    """One residue holding the atoms; ``box``: ``[3, 3]`` box vectors in Å (rows)."""
    top = app.Topology()
    residue = top.addResidue("MOL", top.addChain())
    for k, z in enumerate(numbers):
        element = app.Element.getByAtomicNumber(int(z))
        top.addAtom(f"{element.symbol}{k}", element, residue)
    if box is not None:
        top.setPeriodicBoxVectors([openmm.Vec3(*row) for row in np.asarray(box) / 10] * unit.nanometer)
    return top


def system_of(atoms: Atoms) -> openmm.System:
    """A System with the atoms' masses (and their cell as default box vectors if periodic), no forces."""
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(float(mass))
    if atoms.pbc.any():
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in atoms.cell.array / 10])
    return system


def context(system, positions_angstrom, platform="Reference", integrator=None) -> openmm.Context:
    """A Context on ``platform`` with positions given in Å."""
    integrator = integrator or openmm.VerletIntegrator(0.0005)
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    ctx.setPositions(np.asarray(positions_angstrom) / 10 * unit.nanometer)
    return ctx


def energy_forces(ctx, groups=-1):
    """Energy (kJ/mol) and forces (kJ/mol/nm) of a Context."""
    state = ctx.getState(getEnergy=True, getForces=True, groups=groups)
    return state.getPotentialEnergy().value_in_unit(KJ), state.getForces(asNumpy=True).value_in_unit(KJ_NM)


def ase_reference(model, atoms):
    """ASE energy and forces converted to kJ/mol and kJ/mol/nm."""
    atoms = atoms.copy()
    atoms.calc = MLIPCalculator(model)
    return atoms.get_potential_energy() * EV_TO_KJ_PER_MOL, atoms.get_forces() * EV_TO_KJ_PER_MOL * 10


def bonded(atoms: Atoms, system: openmm.System) -> None:
    """Harmonic bonds (k = 2e5 kJ/mol/nm^2) at the current length for pairs closer than 1.6 Å."""
    force = openmm.HarmonicBondForce()
    i, j, d = neighbor_list("ijd", atoms, 1.6)
    for a, b, r in zip(i, j, d):
        if a < b:
            force.addBond(int(a), int(b), r / 10, 2.0e5)
    force.setForceGroup(1)
    system.addForce(force)


# -- energies and forces against the ASE calculator -------------------------------------------
def test_molecule_matches_ase(model, device):
    """Non-periodic: OpenMM energy/forces (Reference and CPU platforms) equal ASE's after conversion,
    with the model on either device."""
    atoms = ethanol()
    system = system_of(atoms)
    mlf = MLIPForce(model, atoms.numbers, device=device)
    assert not mlf.force.usesPeriodicBoundaryConditions()
    mlf.add_to(system)
    e_ref, f_ref = ase_reference(model, atoms)
    for platform in ("Reference", "CPU"):
        e, f = energy_forces(context(system, atoms.positions, platform))
        assert e == pytest.approx(e_ref, rel=1e-12, abs=1e-9)
        np.testing.assert_allclose(f, f_ref, rtol=1e-9, atol=1e-9)
    # compute() without a Context gives the same numbers
    e, f = mlf.compute(atoms.positions / 10)
    assert e == pytest.approx(e_ref, rel=1e-12)
    np.testing.assert_allclose(f, f_ref, rtol=1e-9, atol=1e-9)


def test_periodic_matches_ase(model, tmp_path):
    """Triclinic periodic box (from a model file and a topology), before and after changing the box."""
    atoms = periodic_box()
    path = mlip.save(model, tmp_path / "m.pt")
    mlf = MLIPForce.from_topology(path, topology_of(atoms.numbers, atoms.cell.array))
    assert mlf.periodic and mlf.force.usesPeriodicBoundaryConditions()
    system = system_of(atoms)
    mlf.add_to(system)
    e, f = energy_forces(context(system, atoms.positions))
    e_ref, f_ref = ase_reference(model, atoms)
    assert e == pytest.approx(e_ref, rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(f, f_ref, rtol=1e-9, atol=1e-8)
    # the box comes from the State: strain it in the Context and compare again
    strained = atoms.copy()
    strained.set_cell(atoms.cell.array * [[1.03], [0.98], [1.01]], scale_atoms=True)
    ctx = context(system, strained.positions)
    ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in strained.cell.array / 10])
    e, f = energy_forces(ctx)
    e_ref, f_ref = ase_reference(model, strained)
    assert e == pytest.approx(e_ref, rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(f, f_ref, rtol=1e-9, atol=1e-8)


def test_subset_of_a_larger_system(model):
    """ML on 9 atoms among 12 (three argon atoms the model does not know): zero force on the others."""
    mol = ethanol()
    others = [0, 5, 11]
    ml = [k for k in range(12) if k not in others]
    positions = np.zeros((12, 3))
    positions[ml] = mol.positions
    positions[others] = [[6.0, 0.0, 0.0], [0.0, 7.0, 0.0], [0.0, 0.0, -8.0]]
    system = openmm.System()
    for k in range(12):
        system.addParticle(39.95 if k in others else float(mol.get_masses()[ml.index(k)]))
    mlf = MLIPForce(model, mol.numbers, atom_indices=ml)
    assert list(mlf.force.getParticles()) == ml
    mlf.add_to(system)
    e, f = energy_forces(context(system, positions))
    e_ref, f_ref = ase_reference(model, mol)
    assert e == pytest.approx(e_ref, rel=1e-12)
    np.testing.assert_allclose(f[ml], f_ref, rtol=1e-9, atol=1e-9)
    assert np.all(f[others] == 0.0)


def test_xml_round_trip(model):
    """OpenMM pickles the force's function: a serialized System computes the same numbers."""
    atoms = ethanol()
    system = system_of(atoms)
    MLIPForce(model, atoms.numbers).add_to(system)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    e1, f1 = energy_forces(context(system, atoms.positions))
    e2, f2 = energy_forces(context(copy, atoms.positions))
    assert e2 == e1
    np.testing.assert_array_equal(f2, f1)


@pytest.mark.parametrize("key, value, words", [
    ("format", "something-else", "not an mlip model file"),
    ("format_version", 99, "model format version 99 is not supported"),
])
def test_pickled_force_with_a_foreign_payload_is_refused(model, monkeypatch, key, value, words):
    """The force pickles as a model file's payload (``mlip.io.to_payload``) and unpickles through
    ``mlip.io.from_payload``: a wrong format or version is refused with ``mlip.load``'s message,
    on the first evaluation (OpenMM 8.6 dies of a segmentation fault when unpickling raises
    inside ``XmlSerializer.deserialize``), by plain ``pickle`` and through OpenMM's XML."""
    import pickle

    import mlip.calculators.openmm as mlip_openmm
    from mlip.io import to_payload

    atoms = ethanol()
    good = MLIPForce(model, atoms.numbers)
    monkeypatch.setattr(mlip_openmm, "to_payload", lambda m: {**to_payload(m), key: value})
    mlf = MLIPForce(model, atoms.numbers)
    refused = pickle.loads(pickle.dumps(mlf._evaluator))
    with pytest.raises(CheckpointError, match=f"pickled MLIPForce: {words}"):
        refused.evaluate(atoms.positions / 10, None)
    again = pickle.loads(pickle.dumps(refused))  # still refused after another round trip
    with pytest.raises(CheckpointError, match=words):
        again(None)
    system = system_of(atoms)
    mlf.add_to(system)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    with pytest.raises(openmm.OpenMMException, match=words):
        context(copy, atoms.positions).getState(getEnergy=True)
    monkeypatch.undo()  # the same force with the real payload computes
    system = system_of(atoms)
    good.add_to(system)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    assert np.isfinite(energy_forces(context(copy, atoms.positions))[0])


# -- dynamics ------------------------------------------------------------------------------------
def test_langevin_1000_steps_float32(md_model_path):
    """1,000 LangevinMiddleIntegrator steps (0.5 fs, CPU platform) with a float32 model stay finite and warm."""
    atoms = ethanol()
    mlf = MLIPForce.from_topology(md_model_path, topology_of(atoms.numbers), dtype="float32")
    assert mlf.model.dtype == torch.float32
    system = system_of(atoms)
    bonded(atoms, system)
    mlf.add_to(system)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    ctx = context(system, atoms.positions, "CPU", integrator)
    ctx.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    kinetic = []
    for _ in range(20):
        integrator.step(50)
        state = ctx.getState(getEnergy=True, getPositions=True)
        assert np.isfinite(state.getPotentialEnergy().value_in_unit(KJ))
        assert np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all()
        kinetic.append(state.getKineticEnergy().value_in_unit(KJ))
    assert ctx.getStepCount() == 1000
    # 9 atoms, 27 degrees of freedom (no CMMotionRemover): <K> = 27/2 kT = 33.7 kJ/mol at 300 K
    temperature = 2 * np.mean(kinetic) / (27 * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(KJ / unit.kelvin))
    assert 100 < temperature < 900, f"mean temperature {temperature:.0f} K"


def _nve_error(path, timestep_fs, steps):
    """Max |E_total(t) - E_total(0)| (kJ/mol) and the ML energy's range over a Verlet run."""
    atoms = ethanol()
    system = system_of(atoms)
    bonded(atoms, system)
    MLIPForce.from_topology(path, topology_of(atoms.numbers)).add_to(system, force_group=0)
    integrator = openmm.VerletIntegrator(timestep_fs * unit.femtosecond)
    ctx = context(system, atoms.positions, "Reference", integrator)
    ctx.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    total, ml = [], []
    for _ in range(100):
        state = ctx.getState(getEnergy=True)
        potential = state.getPotentialEnergy().value_in_unit(KJ)
        total.append(potential + state.getKineticEnergy().value_in_unit(KJ))
        # ML = potential - bonds (group 1; querying it alone does not call the model again)
        ml.append(potential - ctx.getState(getEnergy=True, groups={1}).getPotentialEnergy().value_in_unit(KJ))
        integrator.step(steps // 100)
    return float(np.max(np.abs(np.array(total) - total[0]))), float(np.ptp(ml))


def test_verlet_conserves_energy_float64(md_model_path):
    """NVE, ethanol (ML + harmonic bonds that keep it a molecule), float64, 0.25 ps.

    Measured: max |E_total(t) - E_total(0)| = 6.9e-3 kJ/mol at 0.25 fs (1000 steps) and
    2.8e-2 at 0.5 fs (500 steps), while the ML energy swings by about 8 kJ/mol: the error is
    Verlet's O(dt^2), so the forces are the exact gradient of the energy OpenMM reports.
    """
    error, ml_range = _nve_error(md_model_path, 0.25, 1000)
    assert ml_range > 2.0  # the ML term does exchange energy along the run
    assert error < 0.02, f"total energy moved by {error:.3g} kJ/mol in 1000 steps of 0.25 fs"
    double, _ = _nve_error(md_model_path, 0.5, 500)
    assert 3.0 < double / error < 5.0, f"error {error:.3g} -> {double:.3g} kJ/mol when doubling dt: not O(dt^2)"


# -- openmm-ml -----------------------------------------------------------------------------------
def test_openmmml_create_system(model, tmp_path):
    """``MLPotential("mlip", ...).createSystem``: same numbers as ASE, periodic and not."""
    path = mlip.save(model, tmp_path / "m.pt")
    for atoms in (ethanol(), periodic_box(12, seed=1)):
        box = atoms.cell.array if atoms.pbc.any() else None
        system = MLPotential("mlip", modelPath=str(path)).createSystem(topology_of(atoms.numbers, box))
        assert system.usesPeriodicBoundaryConditions() == (box is not None)
        e, f = energy_forces(context(system, atoms.positions))
        e_ref, f_ref = ase_reference(model, atoms)
        assert e == pytest.approx(e_ref, rel=1e-12, abs=1e-9)
        np.testing.assert_allclose(f, f_ref, rtol=1e-9, atol=1e-8)
    # a model object and precision="single" work too
    atoms = ethanol()
    system = MLPotential("mlip", model=model).createSystem(topology_of(atoms.numbers), precision="single")
    e, _ = energy_forces(context(system, atoms.positions))
    assert e == pytest.approx(ase_reference(model, atoms)[0], rel=1e-5)


@pytest.fixture(scope="module")
def water_box():
    """TIP3P water (amber14) in a 1.4 nm cube; ML region: water 0 and its nearest neighbour water."""
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, boxSize=openmm.Vec3(1.4, 1.4, 1.4) * unit.nanometer)
    top = modeller.topology
    pos = np.asarray(modeller.positions.value_in_unit(unit.angstrom))
    box = np.asarray(top.getPeriodicBoxVectors().value_in_unit(unit.angstrom))
    oxygens = [a.index for a in top.atoms() if a.element.symbol == "O"]
    d = pos[oxygens[1:]] - pos[oxygens[0]]
    d -= np.round(d / np.diag(box)) * np.diag(box)
    partner = oxygens[1 + int(np.argmin(np.linalg.norm(d, axis=1)))]
    ml_atoms = [a.index for r in top.residues() for a in r.atoms()
                if any(x.index in (oxygens[0], partner) for x in r.atoms())]

    def mm_system():
        """A fresh amber14/TIP3P System (PME, 0.6 nm cutoff, rigid water)."""
        return forcefield.createSystem(top, nonbondedMethod=app.PME, nonbondedCutoff=0.6 * unit.nanometer)

    return top, pos, box, ml_atoms, mm_system


def test_mixed_system_openmmml_and_atom_indices(water_box, md_model_path):
    """ML water dimer in TIP3P water: openmm-ml createMixedSystem and MLIPForce(atom_indices=...) both run."""
    top, pos, box, ml_atoms, mm_system = water_box
    model = mlip.load(md_model_path)
    ml = Atoms(numbers=[a.element.atomic_number for a in top.atoms()], positions=pos,
               cell=box, pbc=True)[ml_atoms]
    e_ref, f_ref = ase_reference(model, ml)
    others = np.setdiff1d(np.arange(top.getNumAtoms()), ml_atoms)

    mixed = MLPotential("mlip", modelPath=str(md_model_path)).createMixedSystem(top, mm_system(), ml_atoms,
                                                                                forceGroup=1)
    manual = mm_system()  # ML added on top of the full force field (no terms removed): it must still run
    mlf = MLIPForce.from_topology(md_model_path, top, atom_indices=ml_atoms)
    assert mlf.periodic
    mlf.add_to(manual, force_group=1)
    for system in (mixed, manual):
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
        # a fixed noise (set before the Context reads it): the model is random, and with OpenMM's
        # default (a new seed per run) one of about ten full-suite runs drove the ML waters to NaN
        integrator.setRandomNumberSeed(2026)
        ctx = context(system, pos, "CPU", integrator)
        e, f = energy_forces(ctx, groups={1})
        assert e == pytest.approx(e_ref, rel=1e-10)
        np.testing.assert_allclose(f[ml_atoms], f_ref, rtol=1e-8, atol=1e-7)
        assert np.all(f[others] == 0.0)
        openmm.LocalEnergyMinimizer.minimize(ctx, maxIterations=20)
        integrator.step(100)
        state = ctx.getState(getEnergy=True, getPositions=True)
        assert np.isfinite(state.getPotentialEnergy().value_in_unit(KJ))
        assert np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all()
    # interpolate=True: openmm-ml deep-copies the force (OpenMM pickles our function) into a
    # CustomCVForce; the energy is linear in lambda_interpolate between MM (0) and ML/MM (1)
    lerp = MLPotential("mlip", modelPath=str(md_model_path)).createMixedSystem(top, mm_system(), ml_atoms,
                                                                                interpolate=True)
    ctx = context(lerp, pos, "CPU")
    energies = []
    for lam in (0.0, 0.5, 1.0):
        ctx.setParameter("lambda_interpolate", lam)
        energies.append(energy_forces(ctx)[0])
    mm_only = energy_forces(context(mm_system(), pos, "CPU"))[0]
    assert energies[0] == pytest.approx(mm_only, rel=1e-6)
    assert energies[1] == pytest.approx(0.5 * (energies[0] + energies[2]), rel=1e-6)
    assert energies[2] == pytest.approx(energy_forces(context(mixed, pos, "CPU"))[0], rel=1e-6)


# -- errors --------------------------------------------------------------------------------------
def test_unknown_element_is_named(model):
    """An element the model lacks is named, with its particle index, before anything runs."""
    with pytest.raises(StructureError, match=r"unknown element\(s\) \['Na'\] at particle\(s\) \[2\]"):
        MLIPForce(model, [8, 1, 11, 1])
    with pytest.raises(StructureError, match=r"\['Cl'\] at particle\(s\) \[7\]"):
        MLIPForce(model, [1, 17], atom_indices=[3, 7])
    top = topology_of([8, 1, 1, 11])
    with pytest.raises(StructureError, match="Na"):
        MLPotential("mlip", model=model).createSystem(top)


def test_atom_count_mismatch(model):
    """Atom counts that do not match the model's atoms or the System give clear errors."""
    atoms = ethanol()
    with pytest.raises(StructureError, match="atom_indices has 3 entries but atomic_numbers has 9"):
        MLIPForce(model, atoms.numbers, atom_indices=[0, 1, 2])
    bigger = openmm.System()
    for _ in range(10):
        bigger.addParticle(1.0)
    with pytest.raises(StructureError, match="10 particles but this MLIPForce was built for 9 atoms"):
        MLIPForce(model, atoms.numbers).add_to(bigger)
    with pytest.raises(StructureError, match="index 12 out of range"):
        MLIPForce(model, atoms.numbers[:2], atom_indices=[0, 12]).add_to(bigger)
    # added behind add_to's back: the Context reports the mismatch on the first evaluation
    bigger.addForce(MLIPForce(model, atoms.numbers).force)
    ctx = context(bigger, np.vstack([atoms.positions, [[5.0, 5.0, 5.0]]]))
    with pytest.raises(openmm.OpenMMException, match="built for 9 atoms"):
        ctx.getState(getEnergy=True)
    with pytest.raises(ConfigError, match="modelPath"):
        MLPotential("mlip")


# -- an openmm.Force, added as any other -----------------------------------------------------------
def test_is_an_openmm_force_added_with_add_force(model):
    """``system.addForce(MLIPForce(...))`` as every OpenMM user writes it: same numbers as ASE;
    the System then owns it (a second addForce or add_to is refused)."""
    atoms = ethanol()
    system = system_of(atoms)
    mlf = MLIPForce(model, atoms.numbers)
    assert isinstance(mlf, openmm.Force) and isinstance(mlf, openmm.PythonForce) and mlf.force is mlf
    assert system.addForce(mlf) == 0 and system.getNumForces() == 1
    assert system.getForce(0).getName() == "MLIPForce"
    e, f = energy_forces(context(system, atoms.positions))
    e_ref, f_ref = ase_reference(model, atoms)
    assert e == pytest.approx(e_ref, rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(f, f_ref, rtol=1e-9, atol=1e-9)
    with pytest.raises(RuntimeError, match="already added to a System"):
        mlf.add_to(system_of(atoms))
    with pytest.raises(Exception, match="does not own"):
        system_of(atoms).addForce(mlf)


def test_copies_keep_the_force(model):
    """``copy.deepcopy`` (openmm-ml's interpolation copies forces) and ``pickle`` give an
    MLIPForce with its attributes that computes the same numbers, in a Context and without."""
    import copy
    import pickle

    atoms = periodic_box(12, seed=2)
    mlf = MLIPForce.from_topology(model, topology_of(atoms.numbers, atoms.cell.array), atom_indices=range(12))
    e_ref, f_ref = mlf.compute(atoms.positions / 10, atoms.cell.array / 10)
    for twin in (copy.deepcopy(mlf), pickle.loads(pickle.dumps(mlf))):
        assert isinstance(twin, MLIPForce) and twin.thisown and twin.periodic
        assert twin.atom_indices == list(range(12)) and list(twin.getParticles()) == list(range(12))
        assert twin.usesPeriodicBoundaryConditions() and twin.model.elements == ELEMENTS
        e, f = twin.compute(atoms.positions / 10, atoms.cell.array / 10)
        assert e == e_ref
        np.testing.assert_array_equal(f, f_ref)
        system = system_of(atoms)
        system.addForce(twin)
        e, f = energy_forces(context(system, atoms.positions))
        assert e == pytest.approx(e_ref, rel=1e-12)


# -- a topology that lost atoms on the way ---------------------------------------------------------
def test_collapsed_pdb_topology_is_refused(model, tmp_path):
    """An ASE-written PDB names every atom by its element (C, C, O, H, ...): OpenMM reads the
    9 atoms of ethanol as 3 (one per name), and its positions as 3 too. ``expected=`` (the
    Atoms it was written from, their numbers or a count) refuses that topology, naming both counts."""
    import warnings

    atoms = ethanol()
    ase.io.write(tmp_path / "ethanol.pdb", atoms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OpenMM's "duplicate atom" warnings: the user sees those only
        pdb = app.PDBFile(str(tmp_path / "ethanol.pdb"))
    assert pdb.topology.getNumAtoms() == 3 and len(pdb.positions) == 3  # the collapse, as users meet it
    for expected in (atoms, atoms.numbers, atoms.get_chemical_symbols()):
        with pytest.raises(StructureError, match=r"the topology has 3 atoms \(CHO\) but 9 were expected "
                                                 r"\(C2H6O\); a PDB whose atoms share a name"):
            MLIPForce.from_topology(model, pdb.topology, expected=expected)
    with pytest.raises(StructureError, match="has 3 atoms .* but 9 were expected"):
        MLIPForce.from_topology(model, pdb.topology, expected=9)
    # the same atoms, in another order: refused with the first difference
    with pytest.raises(StructureError, match=r"differ .* at 2 of 9 places, first at atom 0: C in the topology, "
                                             r"O expected"):
        MLIPForce.from_topology(model, topology_of(atoms.numbers), expected=atoms.numbers[[2, 1, 0, *range(3, 9)]])
    # a topology with the atoms expected is accepted, with atom_indices as well
    mlf = MLIPForce.from_topology(model, topology_of(atoms.numbers), expected=atoms)
    assert len(mlf.atomic_numbers) == 9
    assert len(MLIPForce.from_topology(model, topology_of(atoms.numbers), expected=9, atom_indices=[0, 1, 2])
               .atomic_numbers) == 3
