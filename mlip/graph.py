"""Atomic graphs: neighbour lists (vesin) and the data contract between graph and model.

Data contract. A graph is a ``torch_geometric.data.Data`` with exactly these keys
(N atoms, E directed edges, B graphs after batching with :func:`batch_graphs`):

==================  ============  =========  =========================================================
key                 shape         dtype      meaning
==================  ============  =========  =========================================================
``pos``             [N, 3]        float64    Cartesian positions, Å
``atomic_numbers``  [N]           int64      atomic numbers Z
``cell``            [B, 3, 3]     float64    lattice vectors as rows, Å (a graph holds ``[1, 3, 3]``);
                                             zeros where no cell was given
``pbc``             [B, 3]        bool       periodicity of each cell vector
``edge_index``      [2, E]        int64      row 0: neighbour j (source), row 1: centre i (target)
``unit_shifts``     [E, 3]        int64      integer lattice shifts S of each edge
``batch``           [N]           int64      graph of each atom (added by :func:`batch_graphs`)
==================  ============  =========  =========================================================

Edge vector: ``r_ij = pos[j] - pos[i] + unit_shifts @ cell[batch[i]]`` with
``(j, i) = edge_index[:, e]``; every pair closer than ``r_max`` appears in both directions
(full list), periodic images included, no self edge with zero shift. Shifts are kept as
integers plus the cell (not Cartesian) so that a strain of the cell reaches the edges, which
is how the model computes stress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

if TYPE_CHECKING:  # imported where graphs are built: importing torch_geometric costs seconds
    from torch_geometric.data import Batch, Data

from .errors import ConfigError, StructureError

__all__ = ["GRAPH_KEYS", "MIN_DISTANCE", "MAX_IMAGES", "MAX_BINS_PER_AXIS", "build_graph", "atoms_to_graph",
           "batch_graphs"]

#: The keys of a graph, with shape and meaning (see the module docstring).
GRAPH_KEYS = {
    "pos": ("[N, 3]", "float64", "Cartesian positions, Å"),
    "atomic_numbers": ("[N]", "int64", "atomic numbers"),
    "cell": ("[B, 3, 3]", "float64", "lattice vectors as rows, Å; zeros if none"),
    "pbc": ("[B, 3]", "bool", "periodic along each cell vector"),
    "edge_index": ("[2, E]", "int64", "row 0 neighbour j (source), row 1 centre i (target)"),
    "unit_shifts": ("[E, 3]", "int64", "integer lattice shifts: r_ij = pos[j] - pos[i] + S @ cell"),
    "batch": ("[N]", "int64", "graph index of each atom (from batch_graphs)"),
}

#: Two atoms closer than this (Å), periodic images included, are rejected as coincident.
MIN_DISTANCE = 1e-4

#: Largest number of periodic images of the cell within ``r_max`` (``prod(2 ceil(r_max / h_k) + 1)``
#: over the periodic directions, ``h_k`` the distance between opposite faces of the cell). A real
#: cell needs 27 to a few thousand (a one-atom primitive cell with a long cutoff); more means a
#: nearly singular cell, whose neighbour list would take minutes and hold absurd forces.
MAX_IMAGES = 100_000

#: Largest extent of a structure along a non-periodic axis, in units of ``r_max``, that the
#: neighbour list is asked to bin. vesin 0.6 kills the interpreter (SIGFPE) from about 1e5; empty
#: stretches wider than ``r_max`` are squeezed out first (that leaves every neighbour pair and
#: distance as it was), so only a connected object this long is refused.
MAX_BINS_PER_AXIS = 50_000


def build_graph(positions, numbers, *, r_max: float, cell=None, pbc=False) -> Data:
    """Graph of one structure from arrays.

    Args:
        positions: ``[N, 3]`` Cartesian positions in Å.
        numbers: ``[N]`` atomic numbers.
        r_max: cutoff radius in Å.
        cell: ``[3, 3]`` lattice vectors as rows in Å (``None``: no cell).
        pbc: periodicity, one bool or three.

    Returns:
        a ``Data`` with the keys of :data:`GRAPH_KEYS` except ``batch``.

    Raises:
        mlip.errors.StructureError: (a ``ValueError``) empty structure, non-finite positions or
            cell, a periodic direction with a degenerate or nearly singular cell (more than
            :data:`MAX_IMAGES` images within ``r_max``), atoms closer than :data:`MIN_DISTANCE`, a
            connected structure longer than :data:`MAX_BINS_PER_AXIS` ``r_max`` along an axis.
    """
    pos = np.asarray(positions, dtype=np.float64)
    z = np.asarray(numbers)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise StructureError(f"positions: expected shape [N, 3], got {pos.shape}")
    n = pos.shape[0]
    if n == 0:
        raise StructureError("empty structure: no atoms")
    if z.shape != (n,):
        raise StructureError(f"numbers: expected shape [{n}], got {z.shape}")
    if not np.issubdtype(z.dtype, np.integer):
        if not np.all(np.equal(np.mod(z, 1), 0)):
            raise StructureError("numbers: expected integer atomic numbers")
        z = z.astype(np.int64)
    if z.min() < 1 or z.max() > 118:
        bad = int(z[(z < 1) | (z > 118)][0])
        raise StructureError(f"numbers: atomic number {bad} is not an element (expected 1..118)")
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        raise StructureError(f"positions: NaN or infinite value for atom(s) {np.nonzero(bad)[0][:10].tolist()}")
    periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    box = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    if box.shape != (3, 3):
        raise StructureError(f"cell: expected shape [3, 3], got {box.shape}")
    if not np.isfinite(box).all():
        raise StructureError("cell: NaN or infinite value")
    if not r_max > 0:
        raise ConfigError(f"r_max: expected > 0, got {r_max}")
    if periodic.any():
        _check_cell(box, periodic, float(r_max))
    points = _squeeze_gaps(pos, periodic, float(r_max))

    from vesin import NeighborList

    i, j, shifts, dist = NeighborList(cutoff=float(r_max), full_list=True).compute(
        points=points, box=box if periodic.any() else np.zeros((3, 3)), periodic=periodic, quantities="ijSd"
    )
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    shifts = shifts.astype(np.int64)
    if len(i):
        k = int(np.argmin(dist))
        if dist[k] < MIN_DISTANCE:
            what = "a periodic image of itself" if i[k] == j[k] else f"atom {j[k]}"
            raise StructureError(
                f"positions: atom {i[k]} coincides with {what} (distance {dist[k]:.3g} Å < {MIN_DISTANCE} Å)"
            )
    from torch_geometric.data import Data

    return Data(
        pos=torch.from_numpy(pos.copy()),
        atomic_numbers=torch.from_numpy(z.astype(np.int64)),
        cell=torch.from_numpy(box.copy()).unsqueeze(0),
        pbc=torch.from_numpy(periodic).unsqueeze(0),
        edge_index=torch.from_numpy(np.stack([j, i])),
        unit_shifts=torch.from_numpy(shifts),
        num_nodes=n,
    )


def _check_cell(box: np.ndarray, periodic: np.ndarray, r_max: float) -> None:
    """The periodic cell vectors must span their dimension (non-zero volume / area / length), and
    the images within ``r_max`` must be countable (:data:`MAX_IMAGES`), checked before any loop."""
    vecs = box[periodic]
    gram = vecs @ vecs.T
    scale = max(float(np.max(np.abs(vecs))), 1e-300) ** (2 * len(vecs))
    det = abs(np.linalg.det(gram))
    if det <= 1e-12 * scale:
        kind = {3: "volume", 2: "area", 1: "length"}[len(vecs)]
        raise StructureError(
            f"cell: periodic along {np.nonzero(periodic)[0].tolist()} but the cell has zero {kind} "
            f"(vectors {vecs.tolist()})"
        )
    # h_k: distance between the faces spanned by the other periodic vectors = sqrt(det G / det G_k)
    heights = []
    for k in range(len(vecs)):
        others = np.delete(vecs, k, axis=0)
        sub = np.linalg.det(others @ others.T) if len(others) else 1.0
        heights.append(float(np.sqrt(det / sub)))
    images = float(np.prod([2 * np.ceil(r_max / h) + 1 for h in heights]))
    if images > MAX_IMAGES:
        kind = {3: "volume", 2: "area", 1: "length"}[len(vecs)]
        raise StructureError(
            f"cell {box.tolist()}: nearly singular ({kind} {np.sqrt(det):.3g}, distance between opposite faces "
            f"{', '.join(f'{h:.3g}' for h in heights)} Å): {images:.3g} periodic images within r_max = {r_max} Å, "
            f"more than {MAX_IMAGES}; no real structure needs that many (check the cell / box vectors)"
        )


def _squeeze_gaps(pos: np.ndarray, periodic: np.ndarray, r_max: float) -> np.ndarray:
    """Positions with every empty stretch wider than ``r_max`` along a Cartesian axis shortened to
    ``2 r_max``, for a structure periodic along no axis.

    Atoms on both sides of such a gap are more than ``r_max`` apart along that axis before and
    after, and atoms on one side keep their coordinate differences exactly: the neighbour pairs,
    shifts and distances are unchanged, but the box the neighbour list bins stays small (atoms
    flung apart by a blown-up MD run). A connected structure longer than :data:`MAX_BINS_PER_AXIS`
    ``r_max`` raises :class:`~mlip.errors.StructureError`.
    """
    if periodic.any():
        extent = np.ptp(pos, axis=0)[~periodic] if (~periodic).any() else np.zeros(0)
        if extent.size and extent.max() > MAX_BINS_PER_AXIS * r_max:
            raise StructureError(
                f"positions: the structure spans {extent.max():.3g} Å along a non-periodic direction of a periodic "
                f"cell, more than {MAX_BINS_PER_AXIS} x r_max = {MAX_BINS_PER_AXIS * r_max:.3g} Å (atoms flung apart?)")
        return pos
    if np.ptp(pos, axis=0).max() <= MAX_BINS_PER_AXIS * r_max:
        return pos
    out = pos.copy()
    for axis in range(3):
        order = np.argsort(pos[:, axis], kind="stable")
        x = pos[order, axis]
        gaps = np.diff(x)
        cut = np.concatenate([[0.0], np.cumsum(np.where(gaps > 2 * r_max, gaps - 2 * r_max, 0.0))])
        out[order, axis] = x - cut
        span = float(np.ptp(out[:, axis]))
        if span > MAX_BINS_PER_AXIS * r_max:
            raise StructureError(
                f"positions: a connected structure spans {span:.3g} Å along axis {'xyz'[axis]} (no gap wider than "
                f"r_max), more than {MAX_BINS_PER_AXIS} x r_max = {MAX_BINS_PER_AXIS * r_max:.3g} Å")
    return out


def atoms_to_graph(atoms, r_max: float) -> Data:
    """Graph of an ``ase.Atoms`` (positions, numbers, cell and pbc); see :func:`build_graph`."""
    return build_graph(atoms.positions, atoms.numbers, r_max=r_max, cell=atoms.cell.array, pbc=atoms.pbc)


def batch_graphs(graphs: Sequence[Data]) -> Batch:
    """Batch graphs (periodic and not, mixed) with ``Batch.from_data_list``; adds ``batch``."""
    if len(graphs) == 0:
        raise StructureError("batch_graphs: empty list of graphs")
    from torch_geometric.data import Batch

    return Batch.from_data_list(list(graphs))
