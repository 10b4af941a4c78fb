import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import mlip
import mlip.blocks
from mlip.errors import ConfigError, StructureError
from mlip.kernels import TensorProduct
from mlip.kernels.tp import BACKENDS as TP_BACKENDS
from mlip.kernels.tp.power import SymmetricPower
from mlip.testing import max_abs, predict, symmetry_errors

#: every registered tensor-product backend
BACKENDS = tuple(TP_BACKENDS)


def test_outputs_shapes_and_dtype(h, device):
    model = h.model("cg", "float32").to(device)
    g = mlip.batch_graphs([mlip.atoms_to_graph(h.crystal(), 5.0), mlip.atoms_to_graph(h.crystal(1), 5.0)])
    out = model(g, forces=True, stress=True)
    assert out["energy"].shape == (2,) and out["energies"].shape == (16,)
    assert out["forces"].shape == (16, 3) and out["stress"].shape == (2, 3, 3)
    assert all(v.dtype == torch.float32 and v.device.type == device.type for v in out.values())
    assert torch.allclose(out["energy"], torch.stack([out["energies"][:8].sum(), out["energies"][8:].sum()]))
    out = model(g, forces=False)
    assert set(out) == {"energy", "energies"}
    assert torch.equal(model.atomic_energies(g), out["energies"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_symmetries(h, backend, dtype, device):
    """Energy invariant, forces and stress equivariant under rotations, inversion,
    translations and permutations (cp below full rank: approximately, see below)."""
    model = h.model(backend, dtype).to(device)
    for atoms in (h.ethanol(), h.crystal()):
        ref = predict(model, atoms)
        scale = {"energy": max_abs(ref["energy"]) + 1, "energies": max_abs(ref["energies"]) + 1,
                 "forces": max_abs(ref["forces"]) + 1e-3}
        if "stress" in ref:
            scale["stress"] = max_abs(ref["stress"]) + 1e-4
        tol = 1e-11 if dtype == "float64" else 2e-5
        for key, err in symmetry_errors(model, atoms, seed=3).items():
            op, quantity = key.split("/")
            t = tol
            if backend == "cp" and op in ("rotation", "improper"):
                t = 1e-2  # CP rank 7 L^2 < full rank: equivariant up to the decomposition error
            assert err <= t * scale[quantity], (key, err, scale[quantity])


def test_cp_full_rank_is_exactly_equivariant(h):
    model = h.model("cp", tp_options={"cp": {"rank": "full"}})
    for key, err in symmetry_errors(model, h.crystal(), seed=5).items():
        assert err < 1e-10, key


def test_float32_matches_float64(h):
    m64 = h.model("cg", "float64")
    m32 = h.model("cg", "float32")
    a, b = predict(m64, h.crystal()), predict(m32, h.crystal())
    for k in a:
        assert np.allclose(a[k], b[k], rtol=1e-4, atol=1e-5 * (max_abs(a[k]) + 1e-3)), k


@pytest.mark.parametrize("backend", BACKENDS)
def test_smooth_at_cutoff(h, backend):
    """A neighbour crossing r_max: energy and forces continuous, going to their far values."""
    model = h.model(backend)
    base = molecule("H2O")
    r_max = model.r_max

    def at(r):
        atoms = base.copy()
        atoms += Atoms("C", positions=[base.positions[0] + [r, 0.0, 0.0]])  # crosses the O cutoff
        return predict(model, atoms)

    far = at(r_max + 0.5)
    for d in (1e-2, 1e-3):
        inside, outside = at(r_max - d), at(r_max + d)
        assert abs(inside["energy"][0] - outside["energy"][0]) < 50 * d**3
        assert max_abs(inside["forces"] - far["forces"]) < 50 * d**2
        assert max_abs(outside["forces"] - far["forces"]) < 1e-12
    # the curve through the cutoff has no jump
    es = np.array([at(r)["energy"][0] for r in np.linspace(r_max - 0.05, r_max + 0.05, 41)])
    assert np.abs(np.diff(es)).max() < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_far_apart_molecules_add_up(h, backend):
    model = h.model(backend)
    a, b = h.ethanol(), molecule("H2O")
    b.positions += [30.0, 0.0, 0.0]
    ea, eb, eab = predict(model, a), predict(model, b), predict(model, a + b)
    assert abs(eab["energy"][0] - ea["energy"][0] - eb["energy"][0]) < 1e-10
    assert np.allclose(eab["energies"], np.concatenate([ea["energies"], eb["energies"]]), atol=1e-12)
    assert np.allclose(eab["forces"], np.concatenate([ea["forces"], eb["forces"]]), atol=1e-12)


def test_batch_equals_separate_calls(h):
    model = h.model("grid")
    structures = [h.ethanol(), h.crystal(), molecule("H2O")]
    sep = [predict(model, s) for s in structures]
    with torch.no_grad():  # derivatives still come back; outputs detached
        out = model(mlip.batch_graphs([mlip.atoms_to_graph(s, model.r_max) for s in structures]))
    assert not out["energy"].requires_grad and not out["forces"].requires_grad
    assert np.allclose(out["energy"].numpy(), [s["energy"][0] for s in sep], atol=1e-12)
    assert np.allclose(out["forces"].numpy(), np.concatenate([s["forces"] for s in sep]), atol=1e-12)
    cells = [h.crystal(1), h.crystal(2)]
    out = model(mlip.batch_graphs([mlip.atoms_to_graph(s, model.r_max) for s in cells]), stress=True)
    for k, s in enumerate(cells):
        assert np.allclose(out["stress"][k].detach().numpy(), predict(model, s)["stress"][0], atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_switches_every_site(h, backend):
    model = h.model(backend)
    tps = [m for m in model.modules() if isinstance(m, TensorProduct)]
    powers = [m for m in model.modules() if isinstance(m, SymmetricPower)]
    assert tps and all(tp.backend == backend for tp in tps)
    if backend == "grid":  # the many-body product uses the grid: pointwise powers
        assert len(powers) == model.config.num_layers
        assert all(tp.mode == "channelwise" for tp in tps)
    else:
        assert not powers
        assert sum(tp.mode == "elementwise" for tp in tps) == 2 * model.config.num_layers  # A^2, A^3


def test_per_site_override(h):
    model = h.model("cp", tp_backend_overrides={"interaction": "cg", "product": "grid"})
    tps = [m for m in model.modules() if isinstance(m, TensorProduct)]
    assert {tp.backend for tp in tps} == {"cg"} and all(tp.mode == "channelwise" for tp in tps)
    assert sum(isinstance(m, SymmetricPower) for m in model.modules()) == 2
    model = h.model("grid", tp_backend_overrides={"product": "gaunt"})
    assert {(tp.mode, tp.backend) for tp in model.modules() if isinstance(tp, TensorProduct)} == {
        ("channelwise", "grid"), ("elementwise", "gaunt")}


@pytest.mark.parametrize("correlation", [1, 2])
def test_lower_correlation_orders(h, correlation):
    for backend in ("cg", "grid"):
        model = h.model(backend, correlation=correlation, l_max=1)
        assert np.isfinite(predict(model, h.crystal())["forces"]).all()


def test_e0s(h):
    model = h.model("cg")
    atoms = h.ethanol()
    e = predict(model, atoms)
    model.set_e0s({"H": -13.6, "O": -2040.0})
    e2 = predict(model, atoms)
    counts = {s: atoms.get_chemical_symbols().count(s) for s in "HO"}
    assert np.isclose(e2["energy"][0] - e["energy"][0], -13.6 * counts["H"] - 2040.0 * counts["O"])
    assert np.allclose(e2["forces"], e["forces"])
    assert model.e0s() == {"H": -13.6, "C": 0.0, "O": -2040.0, "Cu": 0.0}
    assert model.config.e0s["O"] == -2040.0
    m2 = h.model("cg", e0s={"H": -13.6, "O": -2040.0})
    assert np.allclose(predict(m2, atoms)["energies"], e2["energies"])
    with pytest.raises(ConfigError, match="Fe"):
        model.set_e0s({"Fe": 1.0})


def test_isolated_atoms_have_no_forces(h):
    model = h.model("grid")
    atoms = Atoms("HO", positions=[[0, 0, 0], [0, 0, 20.0]])
    out = predict(model, atoms)
    assert np.array_equal(out["forces"], np.zeros((2, 3)))
    assert np.isclose(out["energy"][0], out["energies"].sum())


def test_same_seed_same_model(h):
    a, b = h.model("cg", seed=7), h.model("cg", seed=7)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k
    c = h.model("cg", seed=8)
    assert not torch.equal(a.embedding, c.embedding)


# -- bad input -------------------------------------------------------------------------

def test_unknown_element_is_named(h):
    model = h.model("cg")
    atoms = molecule("H2O")
    atoms.numbers[0] = 26
    with pytest.raises(StructureError, match=r"unknown element.*Fe"):
        model(mlip.atoms_to_graph(atoms, 5.0))


def test_non_finite_positions_reach_no_nan(h):
    model = h.model("cg")
    g = mlip.atoms_to_graph(molecule("H2O"), 5.0)
    for bad in (float("nan"), float("inf")):
        g2 = g.clone()
        g2.pos[0, 0] = bad
        with pytest.raises(StructureError, match="NaN or infinite"):
            model(g2)


def test_coincident_atoms_in_a_graph(h):
    model = h.model("cg")
    g = mlip.atoms_to_graph(molecule("H2O"), 5.0)
    g.pos[1] = g.pos[0]
    with pytest.raises(StructureError, match="apart"):
        model(g)


def test_stress_needs_periodic_cell(h):
    model = h.model("cg")
    with pytest.raises(StructureError, match="3D periodic"):
        model(mlip.atoms_to_graph(molecule("H2O"), 5.0), stress=True)


def test_empty_graph(h):
    model = h.model("cg")
    g = mlip.atoms_to_graph(molecule("H2O"), 5.0)
    g.pos = g.pos[:0]
    with pytest.raises(StructureError, match="empty"):
        model(g)


def test_training_mode_keeps_graph_for_force_losses(h):
    model = h.model("cg").train()
    out = model(mlip.atoms_to_graph(h.ethanol(), 5.0))
    out["forces"].square().sum().backward()
    assert model.embedding.grad is not None and model.embedding.grad.abs().sum() > 0


def test_second_order_hint_follows_create_graph(h):
    """The kernels hear ``second_order`` exactly when the potential keeps the graph of its
    derivatives (training on forces or stress), not in MD or evaluation."""
    from mlip.kernels.tp.base import second_order_expected

    model = h.model("cp")
    seen = []
    for m in model.modules():
        if isinstance(m, TensorProduct):
            m.register_forward_pre_hook(lambda mod, args: seen.append(second_order_expected()))
    g = mlip.atoms_to_graph(h.ethanol(), 5.0)
    for kw, want in (({"create_graph": True}, True), ({"create_graph": False}, False),
                     ({"create_graph": True, "forces": False}, False), ({}, False)):
        seen.clear()
        model.eval()(g, **kw)
        assert seen and set(seen) == {want}, kw
    seen.clear()
    model.train()(g)  # training mode: create_graph by default
    assert set(seen) == {True} and not second_order_expected()


def _assert_same_training_outputs(m1, m2, g, rtol=1e-11):
    """Energies, per-atom energies, forces, stress and the parameter gradient of a force +
    stress loss (second derivatives, as in training) of two models agree."""
    res = []
    for m in (m1, m2):
        m.train()
        out = m(g, stress=True)
        loss = out["forces"].square().sum() + out["stress"].square().sum()
        res.append((out, torch.autograd.grad(loss, list(m.parameters()), allow_unused=True)))
    (a, ga), (b, gb) = res
    for key in ("energy", "energies", "forces", "stress"):
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=1e-12)
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def _set_edge_chunk(m, k):
    for layer in m.layers:
        layer.interaction.edge_chunk = k


@pytest.mark.parametrize("backend", ["cg", "grid"])
@pytest.mark.parametrize("per_node", [1, mlip.blocks.GATHER_EDGES_PER_NODE])
def test_edge_chunks_change_nothing(h, backend, per_node, monkeypatch):
    """Interactions run edges in chunks on CPU (radial MLP -> TP -> scatter per chunk, the
    neighbour features gathered per group of chunks): energies, forces, stress and the
    parameter gradient of a force loss (second derivatives) equal the one-chunk evaluation,
    including a ragged last chunk and a ragged last group."""
    monkeypatch.setattr(mlip.blocks, "GATHER_EDGES_PER_NODE", per_node)
    whole, chunked = h.model(backend), h.model(backend)
    _set_edge_chunk(whole, 0)
    _set_edge_chunk(chunked, 9)
    g = mlip.atoms_to_graph(h.crystal(2), whole.r_max)
    e, n = g.edge_index.shape[1], g.num_nodes
    group = 9 * -(-per_node * n // 9)
    assert e % 9 and e > 9 * 5 and e > 2 * group and e % group
    _assert_same_training_outputs(whole, chunked, g)


@pytest.mark.parametrize("backend", ["cg", "grid", "cp"])
@pytest.mark.parametrize("l_max", [1, 2, 3])
@pytest.mark.parametrize("chunk", [0, 9])
def test_component_major_rows_change_nothing(h, backend, l_max, chunk):
    """With ``cg``, ``grid`` and ``cp`` the interactions run their edges on component-major rows
    (node rows gathered per edge, messages summed into node rows): the same energies,
    forces, stress and force-loss parameter gradients as the multiplicity-major route,
    whole and chunked."""
    rows, plain = h.model(backend, l_max=l_max), h.model(backend, l_max=l_max)
    for m in (rows, plain):
        _set_edge_chunk(m, chunk)
    for layer in plain.layers:
        layer.interaction.use_rows = False
    assert all(layer.interaction.tp.supports_rows for layer in rows.layers)
    g = mlip.atoms_to_graph(h.crystal(3), rows.r_max)
    _assert_same_training_outputs(rows, plain, g)


@pytest.mark.parametrize("backend", ["cg", "grid"])
def test_low_memory_recompute_changes_nothing(h, backend):
    """``low_memory`` recomputes each edge chunk in the backward: same energies, forces,
    stress, and parameter gradients of a force loss (second derivatives, training)."""
    plain, low = h.model(backend), h.model(backend)
    low.low_memory = True
    assert low.low_memory and not plain.low_memory
    for m in (plain, low):
        _set_edge_chunk(m, 11)
    g = mlip.atoms_to_graph(h.crystal(2), plain.r_max)
    _assert_same_training_outputs(plain, low, g, rtol=1e-12)


# -- backend registry ------------------------------------------------------------------

@pytest.fixture(params=["cg", "grid"])
def registered_backend(request):
    """A subclass of a built-in backend registered under a new name (``(name, parent)``),
    removed from the registry after the test."""
    from mlip.kernels.tp import register_backend

    parent = TP_BACKENDS[request.param]
    cls = type(f"Registered{parent.__name__}", (parent,), {"name": f"test-{request.param}-copy"})
    register_backend(cls)
    try:
        yield cls.name, request.param
    finally:
        del TP_BACKENDS[cls.name]


def test_registered_backend_is_accepted_and_behaves_as_its_parent(h, registered_backend):
    """A backend added with ``register_backend`` is a valid ``tp_backend`` and gives the same
    numbers as the backend it subclasses (the model decides by class, not by name)."""
    name, parent = registered_backend
    assert mlip.PotentialConfig(elements=["H"], tp_backend=name).tp_backend == name
    new, old = h.model(name), h.model(parent)
    tps = [m for m in new.modules() if isinstance(m, TensorProduct)]
    assert tps and all(tp.backend == name and type(tp.impl) is TP_BACKENDS[name] for tp in tps)
    assert sum(isinstance(m, SymmetricPower) for m in new.modules()) == sum(
        isinstance(m, SymmetricPower) for m in old.modules())
    for atoms in (h.ethanol(), h.crystal()):
        a, b = predict(new, atoms), predict(old, atoms)
        for k in b:
            assert np.array_equal(a[k], b[k]), k


def test_unregistered_backend_is_refused():
    with pytest.raises(ConfigError, match="tp_backend.*test-unregistered"):
        mlip.PotentialConfig(elements=["H"], tp_backend="test-unregistered")
