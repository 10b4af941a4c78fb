"""ASE calculator for mlip potentials."""

from __future__ import annotations

import copy

import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mlip.graph import atoms_to_graph
from mlip.io import resolve_model
from mlip.kernels import set_engine

__all__ = ["MLIPCalculator"]



class MLIPCalculator(Calculator):
    """ASE calculator backed by an :class:`mlip.Potential`.

    Args:
        model_or_path: a ``Potential`` or the path of a model file (:func:`mlip.save`).
        device: torch device to run on (default ``"cpu"``).
        dtype: ``"float32"`` / ``"float64"`` (or a torch dtype) to run in; default: the
            model's own. A passed model is copied, never modified, when it must be cast or moved.
        low_memory: run with :attr:`mlip.Potential.low_memory` (about half the memory for
            large systems, some more time; same numbers). Default ``False``.
        engine: run the model's products on this engine (``"auto"``, ``"torch"`` or
            ``"cuequivariance"``, see :meth:`mlip.Potential.with_engine`; same numbers);
            default: the model's own (``"auto"`` for a model file).

    Properties (ASE units): ``energy`` and ``free_energy`` (eV, the same number),
    ``forces`` (eV/Å, ``[N, 3]``), ``energies`` (eV per atom, ``[N]``) and ``stress``
    (eV/Å^3, Voigt order xx, yy, zz, yz, xz, xy; only for 3D periodic cells, otherwise
    ``PropertyNotImplementedError``). Energy, free energy, per-atom energies and forces are
    computed together; results are reused until the atoms change (ASE's ``check_state``).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model_or_path, *, device: str | torch.device = "cpu", dtype=None,
                 low_memory: bool = False, engine: str | None = None, **kwargs):
        super().__init__(**kwargs)
        model = resolve_model(model_or_path, device=device, dtype=dtype)
        if engine is not None:
            model = model.with_engine(engine) if model is model_or_path else set_engine(model, engine)
        if bool(low_memory) != model.low_memory:
            if model is model_or_path:
                model = copy.deepcopy(model)
            model.low_memory = bool(low_memory)
        self.model = model.eval()
        self.device = torch.device(device)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Run the model on ``atoms`` (ASE calls this; use ``atoms.get_forces()`` etc.)."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        want_stress = "stress" in properties
        if want_stress and not atoms.pbc.all():
            raise PropertyNotImplementedError(
                f"stress needs a 3D periodic cell; these atoms have pbc={atoms.pbc.tolist()}"
            )
        graph = atoms_to_graph(atoms, self.model.r_max)
        out = self.model(graph, forces=True, stress=want_stress, create_graph=False)
        energy = float(out["energy"][0].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["energies"].detach().cpu().double().numpy(),
            "forces": out["forces"].detach().cpu().double().numpy(),
        }
        if want_stress:
            s = out["stress"][0].detach().cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(0.5 * (s + s.T))
