import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from mlip.graph import GRAPH_KEYS, atoms_to_graph, batch_graphs, build_graph

R_MAX = 4.0


def _edges(g):
    j, i = g.edge_index.numpy()
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, g.unit_shifts.numpy().tolist())))


def _ase_edges(atoms, r):
    i, j, S = neighbor_list("ijS", atoms, r)
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))


@pytest.mark.parametrize(
    "atoms",
    [
        molecule("CH3CH2OH"),
        bulk("Cu", "fcc", a=3.61),  # 1 atom: many images of itself
        bulk("NaCl", "rocksalt", a=5.6).repeat((2, 1, 1)),
    ],
    ids=["molecule", "primitive-cell", "rocksalt"],
)
def test_edges_match_ase(atoms):
    atoms = atoms.copy()
    if atoms.pbc.all():
        atoms.positions += [7.3, -11.2, 3.1]  # outside the cell: still the same neighbours
        atoms.rattle(0.05, seed=1)
    g = atoms_to_graph(atoms, R_MAX)
    assert _edges(g) == _ase_edges(atoms, R_MAX)
    vec = g.pos[g.edge_index[0]] - g.pos[g.edge_index[1]] + g.unit_shifts.double() @ g.cell[0]
    assert float(vec.norm(dim=1).max()) < R_MAX


def test_mixed_pbc_slab_matches_ase():
    slab = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    slab.pbc = [True, True, False]
    slab.cell[2] = [0.0, 0.0, 0.0]  # no vector along the open direction
    slab.rattle(0.05, seed=2)
    ref = slab.copy()
    ref.cell[2] = [0.0, 0.0, 50.0]
    assert _edges(atoms_to_graph(slab, R_MAX)) == _ase_edges(ref, R_MAX)


def test_keys_shapes_and_dtypes():
    g = atoms_to_graph(molecule("H2O"), R_MAX)
    n, e = 3, 6
    shapes = {"pos": (n, 3), "atomic_numbers": (n,), "cell": (1, 3, 3), "pbc": (1, 3),
              "edge_index": (2, e), "unit_shifts": (e, 3)}
    for key, shape in shapes.items():
        assert tuple(g[key].shape) == shape, key
        assert str(g[key].dtype).endswith(GRAPH_KEYS[key][1]), key
    assert set(GRAPH_KEYS) == set(shapes) | {"batch"}


def test_batch_mixes_periodic_and_molecules():
    mol, cu = molecule("H2O"), bulk("Cu", "fcc", a=3.61)
    g1, g2 = atoms_to_graph(mol, R_MAX), atoms_to_graph(cu, R_MAX)
    b = batch_graphs([g1, g2, g1])
    assert b.num_graphs == 3
    assert b.cell.shape == (3, 3, 3) and b.pbc.shape == (3, 3)
    assert b.pbc.tolist() == [[False] * 3, [True] * 3, [False] * 3]
    assert b.batch.tolist() == [0, 0, 0, 1, 2, 2, 2]
    e1 = g1.edge_index.shape[1]
    # edge indices of the second and third graph are offset by the atoms before them
    assert int(b.edge_index[:, e1:e1 + g2.edge_index.shape[1]].min()) == 3
    assert int(b.edge_index[:, -e1:].min()) == 4


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_positions(bad):
    atoms = molecule("H2O")
    atoms.positions[1, 2] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite.*\[1\]"):
        atoms_to_graph(atoms, R_MAX)


def test_coincident_atoms():
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.5, 0.5, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="coincides"):
        atoms_to_graph(atoms, R_MAX)


def test_coincident_periodic_image():
    atoms = Atoms("H2", positions=[[0, 0, 0], [3.0, 0, 0]], cell=[3.0, 4.0, 4.0], pbc=True)
    with pytest.raises(ValueError, match="coincides"):
        atoms_to_graph(atoms, R_MAX)


@pytest.mark.parametrize("pbc", [True, [True, True, False]])
def test_degenerate_periodic_cell(pbc):
    cell = np.array([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 3.0]])  # first two vectors parallel
    atoms = Atoms("H2", positions=[[0, 0, 0], [1, 1, 1]], cell=cell, pbc=pbc)
    with pytest.raises(ValueError, match="zero (volume|area)"):
        atoms_to_graph(atoms, R_MAX)


def test_zero_cell_periodic():
    atoms = Atoms("H2", positions=[[0, 0, 0], [1, 1, 1]], pbc=True)
    with pytest.raises(ValueError, match="zero volume"):
        atoms_to_graph(atoms, R_MAX)


def test_empty_structure():
    with pytest.raises(ValueError, match="empty"):
        atoms_to_graph(Atoms(), R_MAX)
    with pytest.raises(ValueError, match="empty"):
        build_graph(np.zeros((0, 3)), np.zeros(0, dtype=int), r_max=R_MAX)


def test_array_input_checks():
    with pytest.raises(ValueError, match="shape"):
        build_graph(np.zeros((3, 2)), [1, 1, 1], r_max=R_MAX)
    with pytest.raises(ValueError, match="numbers"):
        build_graph(np.eye(3), [1, 1], r_max=R_MAX)
    with pytest.raises(ValueError, match="not an element"):
        build_graph(np.eye(3), [1, 0, 1], r_max=R_MAX)
    g = build_graph(np.eye(3) * 1.5, [1, 6, 8], r_max=R_MAX)
    assert g.edge_index.shape == (2, 6) and not g.pbc.any()
    assert g.pos.dtype == torch.float64
