"""A potential on another engine: same weights, same energies, forces, stress and training
gradients (cuEquivariance through its pure-torch fallback on CPU); the engine is not part of
the model file; backends without the engine refuse it."""

import pytest
import torch

import mlip
from mlip.errors import ConfigError
from mlip.kernels import TensorProduct
from mlip.kernels.tp import cueq
from mlip.testing import predict

needs_cueq = pytest.mark.skipif(not cueq.available(),
                                reason="cuequivariance / cuequivariance-torch not installed (test extra)")


def _engines(model) -> set:
    return {m.engine for m in model.modules() if hasattr(type(m), "engine") and isinstance(m, torch.nn.Module)
            and m is not model}


def _assert_same(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for k in b:
        err = abs(a[k] - b[k]).max()
        assert err <= tol * max(1.0, abs(b[k]).max()), f"{k}: max error {err:.3g}"


@pytest.fixture(scope="module")
def cg_model():
    from model_cases import small_model

    return small_model("cg", num_channels=4, radial_mlp=[8])


@needs_cueq
def test_energy_forces_stress_equal_across_engines(h, cg_model):
    new = cg_model.with_engine("cuequivariance")
    assert new is not cg_model and new.engine == "cuequivariance" and cg_model.engine == "auto"
    assert _engines(new) == {"cuequivariance"} and _engines(cg_model) == {"auto"}
    for atoms in (h.crystal(), h.ethanol()):
        _assert_same(predict(new, atoms), predict(cg_model, atoms), 1e-9)
    back = new.with_engine("torch")
    _assert_same(predict(back, h.crystal()), predict(cg_model, h.crystal()), 1e-12)


@needs_cueq
def test_with_engine_keeps_weights_and_config(cg_model):
    new = cg_model.with_engine("cuequivariance")
    assert new.config == cg_model.config and "engine" not in new.config.to_dict()
    a, b = new.state_dict(), cg_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(new.parameters(), cg_model.parameters()))


@needs_cueq
def test_training_gradients_equal_across_engines(h, cg_model):
    """A force loss's parameter gradients (second derivatives through every product) agree, so a
    model trains the same on either engine."""
    graph = mlip.atoms_to_graph(h.crystal(), cg_model.r_max)
    grads = []
    for engine in ("torch", "cuequivariance"):
        model = cg_model.with_engine(engine).train()
        out = model(graph, forces=True, stress=True)
        loss = out["energy"].pow(2).sum() + out["forces"].pow(2).sum() + out["stress"].pow(2).sum()
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    for a, b in zip(*grads):
        assert (a - b).abs().max() <= 1e-9 * max(1.0, float(b.abs().max()))


@needs_cueq
def test_saved_model_loads_then_switches(h, cg_model, tmp_path):
    path = mlip.save(cg_model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    assert "engine" not in payload["config"]
    loaded = mlip.load(path).with_engine("cuequivariance")
    _assert_same(predict(loaded, h.crystal()), predict(cg_model, h.crystal()), 1e-9)


@needs_cueq
def test_float32_engines_agree(h):
    from model_cases import small_model

    model = small_model("cg", dtype="float32", num_channels=4, radial_mlp=[8])
    _assert_same(predict(model.with_engine("cuequivariance"), h.crystal()), predict(model, h.crystal()), 1e-5)


def test_backend_without_engine_refuses_it(h):
    from mlip.kernels import BACKENDS

    for backend in BACKENDS:
        model = h.model(backend, num_channels=4, radial_mlp=[8])
        products = [m for m in model.modules() if isinstance(m, TensorProduct)]
        if all("cuequivariance" in tp.engines for tp in products) and backend != "grid":
            continue
        with pytest.raises(ConfigError, match=rf"'{backend}' has no engine 'cuequivariance'; its engines"):
            model.with_engine("cuequivariance")
        assert model.with_engine("torch").engine == "torch" and model.engine == "auto"
    mixed = h.model("cg", num_channels=4, radial_mlp=[8], tp_backend_overrides={"product": "grid"})
    with pytest.raises(ConfigError, match="'grid'"):
        mixed.with_engine("cuequivariance")
    with pytest.raises(ConfigError, match="unknown engine"):
        mixed.with_engine("gpu")


def test_auto_is_torch_on_cpu(cg_model):
    tps = [m for m in cg_model.modules() if isinstance(m, TensorProduct)]
    assert tps and all(tp.engine == "auto" and tp.resolved_engine("cpu") == "torch" for tp in tps)


# -- where users choose the engine ---------------------------------------------------------------

@needs_cueq
def test_ase_calculator_engine(h, cg_model):
    from mlip.calculators.ase import MLIPCalculator

    atoms = h.crystal()
    ref = predict(cg_model, atoms)
    calc = MLIPCalculator(cg_model, engine="cuequivariance")
    assert calc.model.engine == "cuequivariance" and cg_model.engine == "auto"  # the passed model is untouched
    atoms.calc = calc
    assert abs(atoms.get_potential_energy() - ref["energy"][0]) <= 1e-9 * max(1.0, abs(ref["energy"][0]))
    assert abs(atoms.get_forces() - ref["forces"]).max() <= 1e-9
    with pytest.raises(ConfigError, match="'grid'"):
        MLIPCalculator(h.model("grid", num_channels=4, radial_mlp=[8]), engine="cuequivariance")


@needs_cueq
def test_openmm_force_engine_survives_pickling(cg_model):
    pytest.importorskip("openmm")
    import pickle

    from mlip.calculators.openmm import MLIPForce

    force = MLIPForce(cg_model, [1, 6, 8], engine="cuequivariance")
    assert force.model.engine == "cuequivariance" and cg_model.engine == "auto"
    again = pickle.loads(pickle.dumps(force._evaluator))
    assert again.model.engine == "cuequivariance"
    pos = [[0.0, 0.0, 0.0], [0.11, 0.0, 0.0], [0.0, 0.13, 0.02]]
    e1, f1 = force._evaluator.evaluate(pos, None)
    e2, f2 = MLIPForce(cg_model, [1, 6, 8], engine="torch")._evaluator.evaluate(pos, None)
    assert abs(e1 - e2) <= 1e-9 * max(1.0, abs(e2)) and abs(f1 - f2).max() <= 1e-8


@needs_cueq
def test_md_cli_engine(h, tmp_path, capsys):
    from ase.io import read

    from mlip.md import main

    path = mlip.save(mlip.Potential(mlip.PotentialConfig(elements=["H", "C", "O"], num_channels=4, l_max=1,
                                                         radial_mlp=[8], energy_scale=0.1)), tmp_path / "m.pt")
    runs = []
    for engine in ("torch", "cuequivariance"):
        traj = tmp_path / f"{engine}.traj"
        assert main([str(path), str(h.data / "ethanol_rmd17_3.xyz"), "--steps", "4", "--log-every", "2",
                     "--traj", str(traj), "--log", str(tmp_path / f"{engine}.csv"), "--seed", "1",
                     "--no-progress", "--threads", "1", "--engine", engine]) == 0
        runs.append(read(traj, ":"))
    for a, b in zip(*runs):
        assert abs(a.positions - b.positions).max() <= 1e-9
    with pytest.raises(SystemExit) as e:
        main([str(path), str(h.data / "ethanol_rmd17_3.xyz"), "--traj", str(tmp_path / "x.traj"),
              "--log", str(tmp_path / "x.csv"), "--engine", "gpu"])
    assert e.value.code == 2 and "unknown engine 'gpu'" in capsys.readouterr().err


def test_train_config_engine():
    from mlip.train.config import load_config

    assert load_config(None).train.engine == "auto"
    assert load_config(None, ["train.engine=cuequivariance"]).train.engine == "cuequivariance"
    with pytest.raises(ConfigError, match="train.engine"):
        load_config(None, ["train.engine=gpu"])
