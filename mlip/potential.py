"""The MACE-style potential: energy as a sum of atomic energies; forces and stress by autograd.

Architecture (per :class:`~mlip.config.PotentialConfig`): element embedding (C scalars)
-> ``num_layers`` x [interaction: channelwise TP of neighbour features with edge harmonics,
weighted by a radial MLP on a Bessel basis with a polynomial cutoff -> many-body product of
correlation order nu with element-dependent weights -> linear update + element-dependent
residual] -> per-layer readouts. The last layer keeps only scalars (as MACE).

Atomic energy: ``E_i = E0[z_i] + energy_scale * sum_layers readout(h_i) + energy_shift``.

Units and conventions: positions and cells in Å, energies in eV, forces ``-dE/dpos`` in
eV/Å, stress in eV/Å^3 with ASE's sign (positive under tension) as a full ``3x3`` matrix
``sigma = (1/V) dE/d(epsilon)`` for a symmetric strain ``epsilon`` applied as
``pos' = pos (I + epsilon)``, ``cell' = cell (I + epsilon)``. ASE's Voigt order
(xx, yy, zz, yz, xz, xy) is applied by the ASE calculator.
"""

from __future__ import annotations

import copy

import torch
from ase.data import atomic_numbers as _Z
from ase.data import chemical_symbols
from e3nn import o3

from mlip.kernels import second_order, set_engine
from mlip.kernels.tp.engines import EngineSwitch

from .blocks import Layer, LinearReadout, NonLinearReadout, hidden_irreps
from .config import PotentialConfig
from .errors import ConfigError, StructureError
from .graph import MIN_DISTANCE
from .radial import BesselBasis, PolynomialCutoff

__all__ = ["Potential"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Potential(torch.nn.Module):
    """MACE-style equivariant potential with a swappable tensor-product backend.

    Args:
        config: a :class:`~mlip.config.PotentialConfig`.

    Call ``model(graph, forces=True, stress=False)`` on a graph or batch from
    :mod:`mlip.graph`; returns a dict (tensors in the model dtype):

    * ``"energy"`` ``[B]`` eV, ``"energies"`` ``[N]`` eV per atom (always);
    * ``"forces"`` ``[N, 3]`` eV/Å (if ``forces``);
    * ``"stress"`` ``[B, 3, 3]`` eV/Å^3 (if ``stress``; every graph must be 3D periodic).

    A structure it cannot handle (an element it does not know, no atoms, non-finite positions,
    atoms closer than :data:`mlip.graph.MIN_DISTANCE`, stress of a non-periodic cell) raises
    :class:`mlip.errors.StructureError` (a ``ValueError``) saying what is wrong.
    """

    def __init__(self, config: PotentialConfig):
        super().__init__()
        config.validate()
        if config.unresolved():
            raise ConfigError(f"{', '.join(config.unresolved())}: not set (None); a Potential needs them "
                              "(a training run fills them from its data)")
        self.config = PotentialConfig.from_dict(config.to_dict())  # own copy: .to(dtype) updates it
        c = self.config
        gen = torch.Generator().manual_seed(int(c.seed))
        C, L = c.num_channels, c.l_max
        self.num_elements = len(c.elements)
        self.sh_irreps = o3.Irreps.spherical_harmonics(L)
        self.ls = list(range(L + 1))
        hidden = hidden_irreps(C, L)
        scalars = hidden_irreps(C, 0)
        self.embedding = torch.nn.Parameter(torch.randn(self.num_elements, C, generator=gen, dtype=torch.float64))
        self.bessel = BesselBasis(c.r_max, c.num_radial)
        self.cutoff = PolynomialCutoff(c.r_max, c.cutoff_p)
        self.layers = torch.nn.ModuleList()
        self.readouts = torch.nn.ModuleList()
        irreps_in = scalars
        for t in range(c.num_layers):
            last = t == c.num_layers - 1
            irreps_out = scalars if last else hidden
            self.layers.append(Layer(
                irreps_in, self.sh_irreps, hidden, irreps_out, num_elements=self.num_elements,
                correlation=c.correlation, num_radial=c.num_radial, radial_mlp=c.radial_mlp,
                avg_num_neighbors=c.avg_num_neighbors,
                backend_interaction=c.backend("interaction"), options_interaction=c.options("interaction"),
                backend_product=c.backend("product"), options_product=c.options("product"), generator=gen,
            ))
            self.readouts.append(NonLinearReadout(C, c.readout_hidden, generator=gen) if last
                                 else LinearReadout(C, generator=gen))
            irreps_in = irreps_out
        self.channels = C
        # atomic number -> element index (-1: unknown)
        table = torch.full((119,), -1, dtype=torch.long)
        for k, sym in enumerate(c.elements):
            table[_Z[sym]] = k
        self.register_buffer("z_to_index", table, persistent=False)
        e0 = torch.tensor([c.e0s.get(sym, 0.0) for sym in c.elements], dtype=torch.float64)
        self.register_buffer("e0", e0)
        self.to(_DTYPES[c.dtype])

    # -- properties ---------------------------------------------------------------------
    @property
    def low_memory(self) -> bool:
        """Trade time for memory in forces and stress (default ``False``): each interaction
        keeps only the inputs of its edge chunks (gathered neighbour features, harmonics,
        radial features) and recomputes their messages during the backward pass, so the
        memory for the other per-edge intermediates is that of one chunk instead of all
        edges (large systems, e.g. 10,000 atoms at l_max 2 on a 24 GB machine), at
        the cost of one more forward pass through the interactions. Same numbers either way."""
        return all(layer.interaction.recompute for layer in self.layers)

    @low_memory.setter
    def low_memory(self, value: bool) -> None:
        for layer in self.layers:
            layer.interaction.recompute = bool(value)

    @property
    def engine(self) -> str:
        """The engine its products run on: ``"auto"`` (as built), ``"torch"`` or
        ``"cuequivariance"`` (see :mod:`mlip.kernels.tp.engines`). Not part of the configuration
        or the model file: choose it at run time with :meth:`with_engine`."""
        names = {m.engine for m in self.modules() if isinstance(m, EngineSwitch)}
        return names.pop() if len(names) == 1 else "mixed"

    def with_engine(self, name: str) -> "Potential":
        """A copy of this model, same configuration and weights, whose products run on engine
        ``name`` (``"auto"``, ``"torch"`` or ``"cuequivariance"``); this model is unchanged.
        Energies, forces and stress agree across engines to rounding, so a model trained on
        one runs on another. :class:`~mlip.errors.ConfigError` naming the backend when one of
        the model's products has no such engine (``cuequivariance`` runs ``cg`` only)."""
        new = copy.deepcopy(self)
        set_engine(new, name)
        return new

    @property
    def dtype(self) -> torch.dtype:
        """The model's floating dtype (``config.dtype``)."""
        return self.e0.dtype

    @property
    def r_max(self) -> float:
        """Cutoff radius in Å."""
        return float(self.config.r_max)

    @property
    def elements(self) -> list[str]:
        """Chemical symbols the model knows, in element-index order."""
        return list(self.config.elements)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        # keep config.dtype in step with .double() / .float() / .to(dtype)
        name = {torch.float32: "float32", torch.float64: "float64"}.get(self.e0.dtype)
        if name is not None:
            self.config.dtype = name
        return out

    def set_e0s(self, e0s: dict[str, float]) -> None:
        """Set reference energies (eV) per element symbol; elements not named keep theirs."""
        unknown = [e for e in e0s if e not in self.config.elements]
        if unknown:
            raise ConfigError(f"set_e0s: element(s) {unknown} not in model elements {self.config.elements}")
        with torch.no_grad():
            for sym, v in e0s.items():
                self.e0[self.config.elements.index(sym)] = float(v)
        self.config.e0s = self.e0s()

    def e0s(self) -> dict[str, float]:
        """Reference energies (eV) per element symbol."""
        return {sym: float(v) for sym, v in zip(self.config.elements, self.e0.tolist())}

    # -- evaluation ---------------------------------------------------------------------
    def element_index(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Element index ``[N]`` of each atom; :class:`~mlip.errors.StructureError` naming any
        element the model lacks."""
        z = atomic_numbers.to(torch.long)
        if z.numel() and (z.min() < 1 or z.max() > 118):
            raise StructureError(f"atomic_numbers: values must be 1..118, got {sorted(set(z.tolist()))[:5]}")
        idx = self.z_to_index.index_select(0, z)
        if (idx < 0).any():
            missing = sorted({chemical_symbols[int(v)] for v in z[idx < 0].tolist()})
            raise StructureError(f"unknown element(s) {missing}: this model knows {self.config.elements}")
        return idx

    def forward(self, data, *, forces: bool = True, stress: bool = False,
                create_graph: bool | None = None) -> dict[str, torch.Tensor]:
        """Energies (and optionally forces, stress) of a graph or batch; see the class docstring.

        ``create_graph`` (default: ``self.training``) keeps the graph of the derivatives,
        for losses on forces or stress. Derivatives are taken even under ``torch.no_grad()``;
        there, all outputs come back detached.
        """
        outer_grad = torch.is_grad_enabled()
        if create_graph is None:
            create_graph = self.training
        pos = data.pos
        n = pos.shape[0]
        if n == 0:
            raise StructureError("empty structure: no atoms")
        device, dtype = self.e0.device, self.dtype
        pos = pos.to(device=device, dtype=dtype)
        if not torch.isfinite(pos).all():
            raise StructureError("positions: NaN or infinite values")
        element = self.element_index(data.atomic_numbers.to(device))
        batch = getattr(data, "batch", None)
        batch = torch.zeros(n, dtype=torch.long, device=device) if batch is None else batch.to(device)
        cell = data.cell.to(device=device, dtype=dtype).view(-1, 3, 3)
        num_graphs = cell.shape[0]
        edge_index = data.edge_index.to(device)
        shifts = data.unit_shifts.to(device=device, dtype=dtype)

        with torch.enable_grad():
            pos = pos.detach().requires_grad_(forces)
            strain = None
            if stress:
                volume = self._volumes(data, cell)
                strain = torch.zeros(num_graphs, 3, 3, dtype=dtype, device=device, requires_grad=True)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                pos_s = pos + torch.bmm(pos.unsqueeze(1), sym.index_select(0, batch)).squeeze(1)
                cell_s = cell + torch.bmm(cell, sym)
            else:
                pos_s, cell_s = pos, cell
            with second_order(create_graph and (forces or stress)):  # lets kernels keep one graph
                energies = self._atomic_energies(pos_s, cell_s, shifts, element, batch, edge_index)
            energy = torch.zeros(num_graphs, dtype=dtype, device=device).index_add_(0, batch, energies)
            if not torch.isfinite(energy).all():
                raise StructureError("non-finite energy: check the input structure (positions, cell)")
            out = {"energy": energy, "energies": energies}
            inputs = ([pos] if forces else []) + ([strain] if stress else [])
            if inputs:
                # allow_unused: without edges the energy does not depend on positions
                grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
                if forces:
                    out["forces"] = torch.zeros_like(pos) if grads[0] is None else -grads[0]
                if stress:
                    g = grads[-1]
                    out["stress"] = torch.zeros_like(strain) if g is None else g / volume.view(-1, 1, 1)
        if not outer_grad:
            out = {k: v.detach() for k, v in out.items()}
        return out

    def atomic_energies(self, data) -> torch.Tensor:
        """Per-atom energies ``[N]`` in eV (no derivatives)."""
        return self(data, forces=False, stress=False, create_graph=False)["energies"]

    # -- internals ----------------------------------------------------------------------
    @staticmethod
    def _volumes(data, cell: torch.Tensor) -> torch.Tensor:
        pbc = data.pbc.view(-1, 3)
        volume = torch.linalg.det(cell).abs()
        for g in range(cell.shape[0]):
            if not bool(pbc[g].all()) or float(volume[g]) <= 1e-12:
                raise StructureError(
                    f"stress needs a 3D periodic cell with non-zero volume; graph {g} has "
                    f"pbc={pbc[g].tolist()} and volume {float(volume[g]):.3g} Å^3"
                )
        return volume

    def _atomic_energies(self, pos, cell, shifts, element, batch, edge_index) -> torch.Tensor:
        src, dst = edge_index[0], edge_index[1]
        vec = pos.index_select(0, src) - pos.index_select(0, dst)
        # on CPU, skip the product for molecules; elsewhere add it always (zero shifts add exact
        # zeros) rather than wait for the device to answer shifts.any() on every call
        if shifts.shape[0] and (shifts.device.type != "cpu" or bool(shifts.any())):
            if cell.shape[0] == 1:
                vec = vec + shifts @ cell[0]
            else:
                vec = vec + torch.bmm(shifts.unsqueeze(1), cell.index_select(0, batch.index_select(0, dst))).squeeze(1)
        length = torch.linalg.vector_norm(vec, dim=1)
        if length.numel() and bool(length.min() < MIN_DISTANCE):
            k = int(torch.argmin(length))
            raise StructureError(
                f"positions: atoms {int(dst[k])} and {int(src[k])} (or a periodic image) are "
                f"{float(length[k].detach()):.3g} Å apart (< {MIN_DISTANCE} Å)"
            )
        sh = o3.spherical_harmonics(self.ls, vec / length.unsqueeze(-1), normalize=False, normalization="component")
        edge_feats = self.bessel(length) * self.cutoff(length).unsqueeze(-1)
        h = self.embedding.index_select(0, element)
        atomic = None
        C = self.channels
        for layer, readout in zip(self.layers, self.readouts):
            h = layer(h, element, sh, edge_feats, edge_index)
            e = readout(h[:, :C])
            atomic = e if atomic is None else atomic + e
        c = self.config
        return self.e0.index_select(0, element) + c.energy_scale * atomic + c.energy_shift
