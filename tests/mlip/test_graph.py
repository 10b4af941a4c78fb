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


# -- structures that used to kill the interpreter or hang (issue: nothing lost) -------------------
_FAR_FLUNG = r"""
import json, sys
import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list
from mlip.graph import build_graph

rng = np.random.default_rng(0)
cases = [np.array([[0, 0, 0], [1e6, 0, 0], [0, 1.0, 0]])]  # the reported one: vesin raised SIGFPE
for spread in (5e5, 1e7, 3e9):  # small molecules scattered over a huge box (a blown-up MD run)
    centres = rng.uniform(-spread, spread, size=(4, 3))
    cases.append(np.concatenate([c + rng.uniform(-2, 2, size=(5, 3)) for c in centres]))
out = []
for pos in cases:
    g = build_graph(pos, np.ones(len(pos), dtype=int), r_max=5.0)
    j, i = g.edge_index.numpy()
    ours = sorted(zip(i.tolist(), j.tolist()))
    ii, jj = neighbor_list("ij", Atoms(positions=pos, numbers=np.ones(len(pos))), 5.0)
    out.append([ours == sorted(zip(ii.tolist(), jj.tolist())), len(ours)])
print(json.dumps(out))
"""


def test_far_flung_atoms_get_the_exact_neighbour_list():
    """Atoms 1e6 Å and more apart: the same edges as ASE's neighbour list, and the process lives
    (run in a subprocess: a regression would kill it with SIGFPE, not pytest)."""
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _FAR_FLUNG], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert [same for same, _ in result] == [True] * len(result)
    assert result[0][1] == 2 and all(n > 0 for _, n in result[1:])


def test_connected_structure_too_long_is_refused():
    from mlip.errors import StructureError
    from mlip.graph import MAX_BINS_PER_AXIS

    n = int(MAX_BINS_PER_AXIS * 5.0 / 4.0) + 10  # a chain 4 Å apart, longer than the limit
    pos = np.zeros((n, 3))
    pos[:, 0] = 4.0 * np.arange(n)
    with pytest.raises(StructureError, match="connected structure spans"):
        build_graph(pos, np.ones(n, dtype=int), r_max=5.0)


@pytest.mark.parametrize("cell", [
    [[10, 0, 0], [9.9999, 1e-4, 0], [0, 0, 10]],   # passes the zero-volume check (volume 0.01 Å^3)
    [[10, 0, 0], [9.999, 1e-3, 0], [0, 0, 10]],    # took 21 s and gave |F| ~ 1e3
    [[10, 0, 0], [5, 1e-4, 0], [0, 0, 10]],        # the OpenMM box [[1,0,0],[0.5,1e-5,0],[0,0,1]] nm in Å
])
def test_nearly_singular_cell_is_refused_before_any_loop(cell):
    from mlip.errors import StructureError

    with pytest.raises(StructureError, match="nearly singular") as err:
        build_graph(np.array([[0, 0, 0], [1, 1, 1.0]]), np.array([1, 1]), r_max=5.0, cell=cell, pbc=True)
    assert str(np.array(cell, dtype=float).tolist()) in str(err.value)  # names the cell


def test_small_real_cell_with_long_cutoff_is_accepted():
    """A one-atom primitive cell with a long cutoff needs thousands of images: still allowed."""
    atoms = bulk("Cu", "fcc", a=3.61)
    g = atoms_to_graph(atoms, 9.0)
    assert _edges(g) == _ase_edges(atoms, 9.0)
