"""Device hygiene of the hot path: nothing in a model's forward or backward creates a tensor on
the default device behind the caller's back, a moved model has every parameter and buffer on
its new device and dtype, and (with a GPU) a model on CUDA gives the CPU's numbers, on every
backend and engine."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import mlip
from mlip.errors import ConfigError
from mlip.kernels.tp import BACKENDS as TP_BACKENDS
from mlip.kernels.tp import cueq

BACKENDS = tuple(TP_BACKENDS)
ROOT = Path(__file__).resolve().parents[2]
#: mlip's own source folders (third-party code called from the forward is not checked)
OURS = tuple(str(ROOT / d) + "/" for d in ("mlip", "kernels", "calculators", "datasets"))
#: factory functions that put a tensor on the default device unless given ``device=``
FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.tensor, torch.as_tensor,
             torch.randn, torch.rand, torch.randint, torch.linspace, torch.eye, torch.empty_strided,
             torch.scalar_tensor, torch.from_numpy}

CUDA_ONLY = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="no CUDA device here (torch.cuda.is_available() is False)")


class FactoryCalls(TorchFunctionMode):
    """Records every call of a tensor factory without ``device=`` made from mlip's own code
    (file and line), e.g. a constant built with ``torch.tensor(...)`` inside a forward, which
    lands on the CPU while the model runs on CUDA."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            frame = traceback.extract_stack(limit=2)[0]  # the caller of the factory
            if frame.filename.startswith(OURS):
                self.calls.append(f"{func.__name__} at {Path(frame.filename).relative_to(ROOT)}:{frame.lineno}")
        return func(*args, **kwargs)


def test_factory_recorder_sees_our_calls():
    """The recorder itself: a factory without ``device=`` called from mlip's code is caught,
    one with ``device=`` is not (else the next test could not fail)."""
    from mlip.kernels.tp import layout

    with FactoryCalls() as rec:
        torch.zeros(2, device="cpu")
        exec(compile("import torch\ntorch.zeros(3)\ntorch.ones(3, device='cpu')\n", layout.__file__, "exec"))
    assert len(rec.calls) == 1 and rec.calls[0].startswith("zeros at kernels/tp/layout.py:2")


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_and_backward_create_no_tensor_on_the_default_device(h, backend):
    """Energy, forces and stress of a batch in training mode (double backward through the
    forces) call no tensor factory without ``device=`` in mlip's code: such a tensor would
    sit on the CPU next to a CUDA model (a device error or a host round trip per step)."""
    model = h.model(backend, "float64").train()
    g = mlip.batch_graphs([mlip.atoms_to_graph(h.crystal(), 5.0), mlip.atoms_to_graph(h.ethanol(), 5.0)])
    g.cell[1] = torch.eye(3) * 20.0
    g.pbc[1] = True
    with FactoryCalls() as rec:
        out = model(g, forces=True, stress=True)
        loss = out["energy"].square().sum() + out["forces"].square().sum() + out["stress"].square().sum()
        loss.backward()
    assert rec.calls == [], rec.calls


@pytest.mark.parametrize("backend", BACKENDS)
def test_moved_model_has_every_tensor_on_its_device_and_dtype(h, backend):
    """``.to("meta")`` and ``.to(torch.float32)`` move every parameter and buffer (a tensor kept
    as a plain attribute would stay behind on the CPU); kernel constants are handed out per
    device and dtype, on the device and dtype asked for."""
    model = h.model(backend, "float64")
    f32 = model.to(torch.float32)
    assert f32.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in f32.parameters())
    assert all(t.dtype in (torch.float32, torch.long, torch.int64, torch.bool) for t in f32.buffers())
    meta = h.model(backend, "float64").to("meta")
    tensors = [*meta.named_parameters(), *meta.named_buffers()]
    assert tensors and all(t.device.type == "meta" for _, t in tensors), \
        [n for n, t in tensors if t.device.type != "meta"]
    like = torch.empty(0, dtype=torch.float32, device="meta")
    consts = [m for m in meta.modules() if hasattr(m, "_const64")]
    for m in consts:
        for name in m._const64:
            c = m.const(name, like)
            assert c.device.type == "meta" and (c.dtype == torch.float32 or not c.is_floating_point()), name


# -- CUDA only --------------------------------------------------------------------------------
def _engines():
    yield "torch"
    yield pytest.param("cuequivariance", marks=pytest.mark.skipif(
        not cueq.cuda_ops_available(), reason="cuequivariance_torch with its CUDA ops is not installed"))


@pytest.mark.cuda
@CUDA_ONLY
@pytest.mark.parametrize("engine", list(_engines()))
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_gives_the_cpu_numbers(h, backend, engine):
    """float64 energy, per-atom energies, forces and stress of a periodic batch on CUDA equal
    the CPU's (every backend; cg also on cuEquivariance's kernels), and so do the parameter
    gradients of a force loss (a training step)."""
    cpu = h.model(backend, "float64")
    try:
        gpu = cpu.with_engine(engine).to("cuda")
    except ConfigError as exc:  # cuequivariance runs cg only
        pytest.skip(str(exc))
    g = mlip.batch_graphs([mlip.atoms_to_graph(h.crystal(), 5.0), mlip.atoms_to_graph(h.crystal(1), 5.0)])
    outs, grads = [], []
    for model in (cpu, gpu):
        model.train()
        out = model(g, forces=True, stress=True)
        model.zero_grad()
        (out["energy"].square().sum() + out["forces"].square().sum()).backward()
        outs.append({k: v.detach().cpu() for k, v in out.items()})
        grads.append({n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None})
        assert all(v.device.type == ("cuda" if model is gpu else "cpu") for v in out.values())
    for k in outs[0]:
        torch.testing.assert_close(outs[1][k], outs[0][k], rtol=1e-9, atol=1e-10, msg=k)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-8, atol=1e-10, msg=n)


@pytest.mark.cuda
@CUDA_ONLY
def test_cuda_forward_syncs_only_to_validate(h):
    """Under torch's CUDA sync debug mode, a float32 energy + forces call of a periodic crystal
    (graph already on the GPU) makes at most the validation syncs of ``Potential.forward``
    (finite positions, element range and known elements, minimum distance, finite energy: 6
    today), not one per layer, product or edge chunk, and no copy to the host."""
    model = h.model("cg", "float32").with_engine("torch").to("cuda")  # mlip's own kernels
    g = mlip.atoms_to_graph(h.crystal(), 5.0).to("cuda")
    model(g, forces=True)
    torch.cuda.synchronize()
    import warnings

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model(g, forces=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 8, [str(w.message) for w in syncs]


def test_allocator_tuning_only_for_cpu_runs(monkeypatch):
    """mlip-md and mlip-train tune glibc malloc for CPU runs only: on CUDA the tensors are not
    malloc's, and the tuning would only keep host memory."""
    from types import SimpleNamespace

    from mlip import allocator

    calls = []
    monkeypatch.setattr(allocator, "tune_cpu_allocator", lambda: calls.append(1) or True)
    args = SimpleNamespace(no_tune_allocator=False)
    assert allocator.tune_from_cli(args, device="cuda") is False
    assert allocator.tune_from_cli(args, device=torch.device("cuda", 0)) is False
    assert calls == []
    assert allocator.tune_from_cli(args) is True and allocator.tune_from_cli(args, device="cpu") is True
    assert allocator.tune_from_cli(SimpleNamespace(no_tune_allocator=True)) is False
    assert calls == [1, 1]
