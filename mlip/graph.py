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

from typing import Sequence

import numpy as np
import torch
from torch_geometric.data import Batch, Data

__all__ = ["GRAPH_KEYS", "MIN_DISTANCE", "build_graph", "atoms_to_graph", "batch_graphs"]

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
        ValueError: empty structure, non-finite positions or cell, a periodic direction
            with a degenerate cell, atoms closer than :data:`MIN_DISTANCE`.
    """
    pos = np.asarray(positions, dtype=np.float64)
    z = np.asarray(numbers)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions: expected shape [N, 3], got {pos.shape}")
    n = pos.shape[0]
    if n == 0:
        raise ValueError("empty structure: no atoms")
    if z.shape != (n,):
        raise ValueError(f"numbers: expected shape [{n}], got {z.shape}")
    if not np.issubdtype(z.dtype, np.integer):
        if not np.all(np.equal(np.mod(z, 1), 0)):
            raise ValueError("numbers: expected integer atomic numbers")
        z = z.astype(np.int64)
    if z.min() < 1 or z.max() > 118:
        bad = int(z[(z < 1) | (z > 118)][0])
        raise ValueError(f"numbers: atomic number {bad} is not an element (expected 1..118)")
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        raise ValueError(f"positions: NaN or infinite value for atom(s) {np.nonzero(bad)[0][:10].tolist()}")
    periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    box = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    if box.shape != (3, 3):
        raise ValueError(f"cell: expected shape [3, 3], got {box.shape}")
    if not np.isfinite(box).all():
        raise ValueError("cell: NaN or infinite value")
    if periodic.any():
        _check_cell(box, periodic)
    if r_max <= 0:
        raise ValueError(f"r_max: expected > 0, got {r_max}")

    from vesin import NeighborList

    i, j, shifts, dist = NeighborList(cutoff=float(r_max), full_list=True).compute(
        points=pos, box=box if periodic.any() else np.zeros((3, 3)), periodic=periodic, quantities="ijSd"
    )
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    shifts = shifts.astype(np.int64)
    if len(i):
        k = int(np.argmin(dist))
        if dist[k] < MIN_DISTANCE:
            what = "a periodic image of itself" if i[k] == j[k] else f"atom {j[k]}"
            raise ValueError(
                f"positions: atom {i[k]} coincides with {what} (distance {dist[k]:.3g} Å < {MIN_DISTANCE} Å)"
            )
    return Data(
        pos=torch.from_numpy(pos.copy()),
        atomic_numbers=torch.from_numpy(z.astype(np.int64)),
        cell=torch.from_numpy(box.copy()).unsqueeze(0),
        pbc=torch.from_numpy(periodic).unsqueeze(0),
        edge_index=torch.from_numpy(np.stack([j, i])),
        unit_shifts=torch.from_numpy(shifts),
        num_nodes=n,
    )


def _check_cell(box: np.ndarray, periodic: np.ndarray) -> None:
    """The periodic cell vectors must span their dimension (non-zero volume / area / length)."""
    vecs = box[periodic]
    gram = vecs @ vecs.T
    scale = max(float(np.max(np.abs(vecs))), 1e-300) ** (2 * len(vecs))
    if abs(np.linalg.det(gram)) <= 1e-12 * scale:
        kind = {3: "volume", 2: "area", 1: "length"}[len(vecs)]
        raise ValueError(
            f"cell: periodic along {np.nonzero(periodic)[0].tolist()} but the cell has zero {kind} "
            f"(vectors {vecs.tolist()})"
        )


def atoms_to_graph(atoms, r_max: float) -> Data:
    """Graph of an ``ase.Atoms`` (positions, numbers, cell and pbc); see :func:`build_graph`."""
    return build_graph(atoms.positions, atoms.numbers, r_max=r_max, cell=atoms.cell.array, pbc=atoms.pbc)


def batch_graphs(graphs: Sequence[Data]) -> Batch:
    """Batch graphs (periodic and not, mixed) with ``Batch.from_data_list``; adds ``batch``."""
    if len(graphs) == 0:
        raise ValueError("batch_graphs: empty list of graphs")
    return Batch.from_data_list(list(graphs))
