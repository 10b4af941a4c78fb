"""OpenMM force for mlip potentials, and the ``mlip`` potential of openmm-ml.

Two ways to run an mlip model inside OpenMM (>= 8.6, which has ``openmm.PythonForce``):

1. :class:`MLIPForce` is an ``openmm.Force`` (an ``openmm.PythonForce``): add it to any
   ``System`` as any other force::

       from mlip.calculators.openmm import MLIPForce

       system.addForce(MLIPForce.from_topology("model.pt", pdb.topology, expected=atoms))

   ``expected`` (the ``ase.Atoms`` the PDB was written from, atomic numbers or a count)
   refuses a topology whose atoms differ from it: OpenMM reads a PDB whose atoms share a
   name within a residue, as ``ase.io.write`` writes them, as fewer atoms.

   With ``atom_indices`` the model sees only those atoms (an ML region inside a classical
   system): OpenMM passes it their positions only, and this force puts zero force on every
   other particle. Remove the classical terms *inside* the ML region yourself, or use
   openmm-ml's ``createMixedSystem``, which does it for you.

2. openmm-ml: this module registers the potential ``"mlip"`` (entry point
   ``openmmml.potentials``), so::

       from openmmml import MLPotential

       potential = MLPotential("mlip", modelPath="model.pt")
       system = potential.createSystem(topology)                              # ML only
       mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)     # ML/MM

Units: OpenMM's outside (nm, kJ/mol, kJ/mol/nm), the model's inside (Å, eV, eV/Å); the
conversion happens here, at the edge, with :data:`EV_TO_KJ_PER_MOL` and
:data:`NM_TO_ANGSTROM`. The energy includes the model's reference energies ``E0`` (a
constant per atom; it does not change forces or dynamics).

Periodicity: a periodic force (``periodic=True``; ``from_topology`` and openmm-ml choose it
when the topology has box vectors) reads the box vectors of every ``State`` (triclinic boxes
included) and builds a periodic neighbour list; a non-periodic one ignores any box.

openmm and openmm-ml are optional dependencies: ``import mlip.calculators`` does not import
this module; importing it needs OpenMM >= 8.6 (an ``ImportError`` naming the extra otherwise),
and it imports openmm-ml only when its two openmm-ml classes are asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from mlip.calculators.elements import check_elements
from mlip.errors import ConfigError, StructureError
from mlip.graph import build_graph
from mlip.io import from_payload, resolve_model, to_payload
from mlip.kernels import ENGINES, set_engine
from mlip.potential import Potential

__all__ = [
    "EV_TO_KJ_PER_MOL",
    "NM_TO_ANGSTROM",
    "MLIPForce",
    "MLIPPotentialImpl",  # noqa: F822  (defined on first access, see __getattr__)
    "MLIPPotentialImplFactory",  # noqa: F822
]

#: kJ/mol in one eV (e * N_A / 1000, CODATA 2018 exact constants).
EV_TO_KJ_PER_MOL = 96.48533212331002
#: Å in one nm.
NM_TO_ANGSTROM = 10.0
# forces: eV/Å -> kJ/mol/nm
_FORCE_TO_OPENMM = EV_TO_KJ_PER_MOL * NM_TO_ANGSTROM



def _openmm():
    try:
        import openmm
    except ImportError as exc:  # optional dependency
        raise ImportError("mlip.calculators.openmm needs OpenMM >= 8.6: pip install 'mlip[openmm]'") from exc
    if not hasattr(openmm, "PythonForce"):
        raise ImportError(f"mlip.calculators.openmm needs OpenMM >= 8.6 (openmm.PythonForce); "
                          f"found OpenMM {openmm.__version__}")
    return openmm


openmm = _openmm()


def _rebuild_evaluator(payload: dict, numbers, periodic: bool, device: str, engine: str = "auto"):
    """Unpickle an :class:`_Evaluator` (OpenMM pickles a ``PythonForce``'s function to serialize it).

    ``payload`` is a model file's dict (:func:`mlip.io.to_payload`), read with
    :func:`mlip.io.from_payload`: the same format and version checks as :func:`mlip.load`.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"  # a System written on a GPU machine, read on one without
    try:
        model = set_engine(from_payload(payload, source="pickled MLIPForce"), engine)
    except Exception as exc:
        # OpenMM (8.6) dies with a segmentation fault when unpickling a PythonForce's function
        # raises inside XmlSerializer.deserialize: refuse on the first evaluation instead,
        # which OpenMM reports as an OpenMMException with this message
        return _RefusedEvaluator(exc, (payload, numbers, periodic, device, engine))
    return _Evaluator(model.to(device).eval(), numbers, periodic)


class _RefusedEvaluator:
    """Stands in for an :class:`_Evaluator` whose pickled model could not be used: every call
    raises that error (e.g. :class:`~mlip.errors.CheckpointError` for a foreign payload)."""

    def __init__(self, error: Exception, args: tuple):
        self.error, self.args = error, args

    def __reduce__(self):
        return _rebuild_evaluator, self.args

    def evaluate(self, positions_nm, box_nm):
        raise self.error

    def __call__(self, state):
        raise self.error


class _Evaluator:
    """The function OpenMM calls: ``State`` (nm) -> (energy kJ/mol, forces ``[n, 3]`` kJ/mol/nm).

    It pickles as the model's file payload (:func:`mlip.io.to_payload`: config, weights,
    format version; not as a module object), so that a ``System`` holding the force can be
    written with ``XmlSerializer`` and read back.
    """

    def __init__(self, model: Potential, numbers: np.ndarray, periodic: bool):
        self.model = model
        self.numbers = np.asarray(numbers, dtype=np.int64)
        self.periodic = bool(periodic)

    def __reduce__(self):
        return _rebuild_evaluator, (to_payload(self.model), self.numbers.copy(), self.periodic,
                                    str(self.model.e0.device),
                                    self.model.engine if self.model.engine in ENGINES else "auto")

    def evaluate(self, positions_nm: np.ndarray, box_nm: np.ndarray | None) -> tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces (``[n, 3]`` kJ/mol/nm) at ``positions_nm`` (``[n, 3]`` nm)."""
        pos = np.asarray(positions_nm, dtype=np.float64) * NM_TO_ANGSTROM
        n = len(self.numbers)
        if pos.shape != (n, 3):
            raise StructureError(
                f"MLIPForce: got positions of shape {pos.shape} but the force was built for {n} atoms; "
                f"the System has a different number of particles than the atomic numbers given "
                f"(pass atom_indices to apply the model to part of a System)"
            )
        if self.periodic:
            if box_nm is None:
                raise StructureError("MLIPForce: periodic force but no periodic box vectors")
            cell = np.asarray(box_nm, dtype=np.float64) * NM_TO_ANGSTROM
            graph = build_graph(pos, self.numbers, r_max=self.model.r_max, cell=cell, pbc=True)
        else:
            graph = build_graph(pos, self.numbers, r_max=self.model.r_max)
        with torch.no_grad():  # the model still takes its force derivative; outputs come back detached
            out = self.model(graph, forces=True, stress=False, create_graph=False)
        energy = float(out["energy"][0].detach()) * EV_TO_KJ_PER_MOL
        forces = out["forces"].detach().cpu().to(torch.float64).numpy() * _FORCE_TO_OPENMM
        return energy, forces

    def __call__(self, state) -> tuple[float, np.ndarray]:
        from openmm import unit

        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) if self.periodic else None
        return self.evaluate(pos, box)


class MLIPForce(openmm.PythonForce):
    """An mlip model as an OpenMM force: ``system.addForce(MLIPForce(...))``.

    An ``openmm.PythonForce`` whose function runs the model. Once added, the System owns
    it, as any OpenMM force: add it to one System only (build another ``MLIPForce`` for
    another System). :meth:`add_to` adds it after checking it against the System.

    Args:
        model_or_path: an :class:`mlip.Potential` or the path of a model file (:func:`mlip.save`).
        atomic_numbers: ``[n]`` atomic numbers of the atoms the model acts on, in the order
            of ``atom_indices`` (or of the System's particles when ``atom_indices`` is None).
        atom_indices: System particle indices of those ``n`` atoms (an ML region inside a
            larger System); None: the model acts on all particles, and the System must have
            exactly ``n``. Other particles get zero force from this force.
        periodic: use the State's periodic box vectors (nm) and a periodic neighbour list;
            False: the atoms form an open (non-periodic) system.
        device: torch device the model runs on (default ``"cpu"``).
        dtype: ``"float32"`` / ``"float64"`` (or a torch dtype); default the model's own. A
            passed model is copied, never modified, when it must be cast or moved.
        engine: run the model's products on this engine (``"auto"``, ``"torch"`` or
            ``"cuequivariance"``, see :meth:`mlip.Potential.with_engine`); default: the
            model's own. A pickled force keeps it.

    Attributes:
        model: the :class:`mlip.Potential` evaluated on every call.
        atomic_numbers: ``[n]`` int64 atomic numbers.
        atom_indices: list of ``n`` particle indices, or None (all particles).
        periodic: whether the force uses periodic boundary conditions.

    OpenMM calls the force with positions in nm; the model gets Å. It returns the energy in
    kJ/mol (``E_model * 96.485...``) and forces in kJ/mol/nm (``F_model * 964.85...``).

    Raises:
        mlip.errors.StructureError: (a ``ValueError``) an element the model does not know
            (named, with the atom indices), a length mismatch between ``atomic_numbers`` and
            ``atom_indices``, repeated or negative indices.
    """

    def __init__(self, model_or_path, atomic_numbers, *, atom_indices=None, periodic: bool = False,
                 device: str | torch.device = "cpu", dtype=None, engine: str | None = None):
        numbers = np.asarray(atomic_numbers)
        if numbers.ndim != 1 or numbers.size == 0:
            raise StructureError(f"atomic_numbers: expected a non-empty 1-D sequence, got shape {numbers.shape}")
        if not np.issubdtype(numbers.dtype, np.integer):
            raise StructureError(f"atomic_numbers: expected integers, got dtype {numbers.dtype}")
        numbers = numbers.astype(np.int64)
        if atom_indices is not None:
            atom_indices = [int(i) for i in atom_indices]
            if len(atom_indices) != len(numbers):
                raise StructureError(f"atom_indices has {len(atom_indices)} entries but atomic_numbers has "
                                 f"{len(numbers)}: they must describe the same atoms")
            if min(atom_indices) < 0:
                raise StructureError(f"atom_indices: negative index {min(atom_indices)}")
            if len(set(atom_indices)) != len(atom_indices):
                raise StructureError("atom_indices: repeated particle indices")
        model = resolve_model(model_or_path, device=device, dtype=dtype)
        if engine is not None:
            model = model.with_engine(engine) if model is model_or_path else set_engine(model, engine)
        check_elements(numbers, model.elements, indices=atom_indices, noun="particle")
        evaluator = _Evaluator(model, numbers, bool(periodic))
        super().__init__(evaluator)
        self._evaluator = evaluator
        self.atomic_numbers = numbers
        self.atom_indices = atom_indices
        self.periodic = bool(periodic)
        self.setName("MLIPForce")
        self.setUsesPeriodicBoundaryConditions(self.periodic)
        if atom_indices is not None:
            self.setParticles(atom_indices)

    @property
    def model(self) -> Potential:
        """The :class:`mlip.Potential` evaluated on every call."""
        return self._evaluator.model

    @property
    def force(self) -> "MLIPForce":
        """This force itself (code written when ``MLIPForce`` held a ``PythonForce`` adds ``mlf.force``)."""
        return self

    def __getstate__(self) -> dict:
        # openmm.Force pickles as its XML alone; keep this class's attributes too
        return {"xml": openmm.XmlSerializer.serialize(self),
                "attrs": {k: v for k, v in self.__dict__.items() if k != "this"}}

    def __setstate__(self, state) -> None:
        super().__setstate__(state["xml"])
        self.__dict__.update(state["attrs"])

    @classmethod
    def from_topology(cls, model_or_path, topology, *, expected=None, atom_indices=None,
                      periodic: bool | None = None, device: str | torch.device = "cpu", dtype=None,
                      engine: str | None = None) -> "MLIPForce":
        """An :class:`MLIPForce` for the atoms of an ``openmm.app.Topology``.

        Atomic numbers come from the topology's elements (of ``atom_indices`` only, if
        given). ``periodic`` defaults to whether the topology has periodic box vectors.

        ``expected``: what the whole topology must hold, in order: an ``ase.Atoms`` (e.g. the
        atoms a PDB was written from), a sequence of atomic numbers or symbols, or an atom
        count. Give it whenever the topology comes from a file: OpenMM reads a PDB whose atoms
        share a name within a residue (``ase.io.write`` names every atom by its element) as
        fewer atoms, and the positions read with it match those, so nothing else notices.

        Other arguments as in :class:`MLIPForce`. :class:`~mlip.errors.StructureError` for an
        atom without an element, or a topology that differs from ``expected`` (the counts and
        formulas named).
        """
        atoms = list(topology.atoms())
        if expected is not None:
            _check_expected(atoms, expected)
        if atom_indices is not None:
            atom_indices = [int(i) for i in atom_indices]
            bad = [i for i in atom_indices if not 0 <= i < len(atoms)]
            if bad:
                raise StructureError(f"atom_indices: {bad[:5]} out of range for a topology of {len(atoms)} atoms")
            atoms = [atoms[i] for i in atom_indices]
        missing = [(a.index, a.name) for a in atoms if a.element is None]
        if missing:
            raise StructureError(f"topology: atom(s) {missing[:5]} have no element (virtual sites or extra "
                             f"particles cannot be given to the model; use atom_indices to leave them out)")
        numbers = [a.element.atomic_number for a in atoms]
        if periodic is None:
            periodic = topology.getPeriodicBoxVectors() is not None
        return cls(model_or_path, numbers, atom_indices=atom_indices, periodic=periodic, device=device, dtype=dtype,
                   engine=engine)

    def add_to(self, system, *, force_group: int | None = None) -> int:
        """Check this force against ``system`` and add it; returns the force's index in the System.

        Checks that the System has as many particles as atoms (no ``atom_indices``) or
        more than the largest index, and that a periodic force goes to a System with box
        vectors (OpenMM always has default ones). ``force_group`` (0..31) sets the force
        group, e.g. to read the ML energy alone with ``getState(groups={g})``.
        """
        n_sys = system.getNumParticles()
        if self.atom_indices is None and n_sys != len(self.atomic_numbers):
            raise StructureError(f"the System has {n_sys} particles but this MLIPForce was built for "
                             f"{len(self.atomic_numbers)} atoms (pass atom_indices for an ML region)")
        if self.atom_indices is not None and max(self.atom_indices) >= n_sys:
            raise StructureError(f"atom_indices: index {max(self.atom_indices)} out of range for a System "
                             f"of {n_sys} particles")
        if not self.thisown:
            raise RuntimeError("this MLIPForce was already added to a System, which owns it; "
                               "create a new MLIPForce for another System")
        if force_group is not None:
            self.setForceGroup(int(force_group))
        return system.addForce(self)

    def compute(self, positions, box_vectors=None) -> tuple[float, np.ndarray]:
        """Evaluate without a Context: energy in kJ/mol and forces ``[n, 3]`` in kJ/mol/nm.

        ``positions``: ``[n, 3]`` positions in nm of this force's atoms (a plain array or an
        ``openmm.unit.Quantity``); ``box_vectors``: ``[3, 3]`` box vectors in nm as rows
        (periodic forces only).
        """
        positions = _in_nm(positions)
        box = None if box_vectors is None else _in_nm(box_vectors)
        if self.periodic and box is None:
            raise StructureError("compute: a periodic MLIPForce needs box_vectors (nm)")
        return self._evaluator.evaluate(positions, box)

    def __repr__(self) -> str:
        region = "all particles" if self.atom_indices is None else f"{len(self.atom_indices)} particles"
        return (f"MLIPForce({len(self.atomic_numbers)} atoms, {region}, periodic={self.periodic}, "
                f"elements={self.model.elements}, r_max={self.model.r_max} Å, dtype={self.model.config.dtype})")


def _formula(numbers) -> str:
    from ase.data import chemical_symbols
    from ase.formula import Formula

    return Formula("".join(chemical_symbols[z] for z in numbers)).format("hill") or "nothing"


def _check_expected(topology_atoms: list, expected) -> None:
    """Refuse topology atoms that differ from ``expected`` (Atoms, numbers, symbols or a count)."""
    from ase.data import atomic_numbers

    have = [a.element.atomic_number if a.element is not None else 0 for a in topology_atoms]
    if isinstance(expected, (int, np.integer)):
        want = None
        n_want = int(expected)
    else:
        want = getattr(expected, "numbers", expected)
        want = [atomic_numbers[z] if isinstance(z, str) else int(z) for z in want]
        n_want = len(want)
    pdb_hint = ("; a PDB whose atoms share a name within a residue (as ase.io.write names them) is read by "
                "OpenMM as fewer atoms: write unique atom names, or build the topology from the atoms")
    if len(have) != n_want:
        raise StructureError(f"the topology has {len(have)} atoms ({_formula(have)}) but {n_want} were expected"
                             + (f" ({_formula(want)})" if want is not None else "")
                             + (pdb_hint if len(have) < n_want else ""))
    if want is not None and have != want:
        from ase.data import chemical_symbols

        diff = [k for k, (a, b) in enumerate(zip(have, want)) if a != b]
        k = diff[0]
        raise StructureError(f"the topology's atoms differ from the expected ones at {len(diff)} of {n_want} "
                             f"places, first at atom {k}: {chemical_symbols[have[k]]} in the topology, "
                             f"{chemical_symbols[want[k]]} expected")


def _in_nm(x) -> np.ndarray:
    if hasattr(x, "value_in_unit"):
        from openmm import unit

        x = x.value_in_unit(unit.nanometer)
    return np.asarray(x, dtype=np.float64)  # also a list of openmm.Vec3


# -- openmm-ml -----------------------------------------------------------------------------
# openmm-ml imports the entry points of "openmmml.potentials" at the end of its own import,
# from inside openmmml.mlpotential. Importing openmm-ml at the top of this module would
# therefore be circular (openmm-ml would ask this half-imported module for the factory), so the
# two classes are built on first access (PEP 562), when openmmml.mlpotential has defined its bases.

_PRECISIONS = {None: None, "single": "float32", "double": "float64", "float32": "float32", "float64": "float64"}


def _define_openmmml_classes() -> None:
    from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

    if "MLIPPotentialImpl" in globals():  # defined by a nested call from openmm-ml's own import
        return

    class MLIPPotentialImpl(MLPotentialImpl):
        """openmm-ml implementation of the ``"mlip"`` potential (a :class:`MLIPForce`).

        Create it through openmm-ml::

            potential = MLPotential("mlip", modelPath="model.pt")     # or model=<mlip.Potential>
            system = potential.createSystem(topology, precision="single")
            mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)

        Options (in ``MLPotential(...)`` or ``createSystem``/``createMixedSystem``):
        ``modelPath`` (a model file) or ``model`` (an ``mlip.Potential``); ``precision``:
        ``"single"``/``"double"`` (or ``"float32"``/``"float64"``; default the model's);
        ``device``: torch device (default: CUDA if available, else CPU, as openmm-ml's
        other potentials). The force is periodic when the topology has box vectors or the
        System uses periodic boundary conditions. The model is short-ranged (cutoff
        ``r_max``), so ``getMLLongRange()`` is False.
        """

        def __init__(self, name: str, modelPath=None, model=None, **args):
            if (modelPath is None) == (model is None):
                raise ConfigError(f"MLPotential({name!r}): give exactly one of modelPath= (an mlip model "
                                 f"file) or model= (an mlip.Potential)")
            self.name = name
            self.modelPath = modelPath
            self.model = model
            self.args = args

        def addForces(self, topology, system, atoms, forceGroup, **args):
            """Add an :class:`MLIPForce` for ``atoms`` (None: all) of ``topology`` to ``system``."""
            args = {**self.args, **args}
            precision = args.get("precision", args.get("dtype"))
            if precision not in _PRECISIONS:
                raise ConfigError(f"precision: expected 'single' or 'double', got {precision!r}")
            periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
            source = self.model if self.model is not None else self.modelPath
            mlf = MLIPForce.from_topology(source, topology, atom_indices=None if atoms is None else list(atoms),
                                          periodic=periodic, device=self._getTorchDevice(args),
                                          dtype=_PRECISIONS[precision])
            # not add_to(): openmm-ml's interpolation passes an empty scratch System
            mlf.setForceGroup(forceGroup)
            system.addForce(mlf)

        def getMLLongRange(self) -> bool:
            """False: the model only sees neighbours within its cutoff ``r_max``."""
            return False

    class MLIPPotentialImplFactory(MLPotentialImplFactory):
        """openmm-ml factory of the ``"mlip"`` potential (registered by mlip's entry point)."""

        def createImpl(self, name: str, **args) -> MLIPPotentialImpl:
            """A :class:`MLIPPotentialImpl`; ``args`` are ``MLPotential``'s keyword arguments."""
            return MLIPPotentialImpl(name, **args)

    for cls in (MLIPPotentialImpl, MLIPPotentialImplFactory):
        cls.__qualname__ = cls.__name__
        cls.__module__ = __name__
    globals().update(MLIPPotentialImpl=MLIPPotentialImpl, MLIPPotentialImplFactory=MLIPPotentialImplFactory)


def __getattr__(name: str):
    if name in ("MLIPPotentialImpl", "MLIPPotentialImplFactory"):
        _define_openmmml_classes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
