"""The one tensor-product interface of mlip, with swappable backends."""

from __future__ import annotations

import inspect

import torch

from mlip.errors import ConfigError, KernelInputError

from ..irreps import as_irreps, split_channels
from .base import CHUNK_FLOATS, MODES, TPBackend, TPSpec, check_chunk_size, chunk_size_for, in_chunks, run_in_chunks
from .engines import EngineSwitch, resolve_engine

__all__ = ["TensorProduct", "BACKENDS", "register_backend", "backend_options", "CHUNK_FLOATS"]

BACKENDS: dict[str, type] = {}



def register_backend(cls: type) -> type:
    """Class decorator/function adding a backend under ``cls.name``.

    ``cls`` is a :class:`~mlip.kernels.tp.base.TPBackend` subclass built as
    ``cls(spec, **options)``; its keyword parameters after ``spec`` are its options.
    Every list of backends (the model's configuration, the tests) is read from
    :data:`BACKENDS`, so a registered backend is usable everywhere.
    """
    BACKENDS[cls.name] = cls
    return cls


def backend_options(name: str) -> list[str] | None:
    """The option names backend ``name`` accepts (``None``: any, it takes ``**options``)."""
    params = list(inspect.signature(BACKENDS[name].__init__).parameters.values())[2:]  # after self, spec
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _check_options(backend: str, options: dict) -> None:
    known = backend_options(backend)
    unknown = [] if known is None else sorted(set(options) - set(known))
    if unknown:
        allowed = f"its options: {known}" if known else "it takes no options"
        raise ConfigError(f"tensor-product backend {backend!r} has no option {unknown[0]!r}; {allowed}")


def _check_dtypes(x1, x2, weight) -> None:
    if not x1.is_floating_point() or x1.dtype not in (torch.float32, torch.float64):
        raise KernelInputError(f"x1: expected float32 or float64, got {x1.dtype}")
    for name, t in (("x2", x2), ("weight", weight)):
        if t.dtype != x1.dtype:
            raise KernelInputError(f"{name}: dtype {t.dtype} differs from x1's {x1.dtype}")
        if t.device != x1.device:
            raise KernelInputError(f"{name}: device {t.device} differs from x1's {x1.device}")


def _weight_error(n: int, numel: int, got) -> KernelInputError:
    return KernelInputError(f"weight: expected shape [{n}, {numel}] or [{numel}], got {got}")


class TensorProduct(EngineSwitch, torch.nn.Module):
    """Equivariant tensor product ``out = TP(x1, x2; weight)`` with a swappable backend.

    Args:
        irreps_in1: irreps of ``x1`` with C channels on every irrep, e.g. ``"32x0e+32x1o+32x2e"``.
        irreps_in2: irreps of ``x2``: one channel in ``channelwise`` mode (e.g. edge
            spherical harmonics ``"0e+1o+2e"``), C channels in ``elementwise`` mode.
        irreps_out: output irreps, C channels on every irrep.
        mode: ``"channelwise"`` (e3nn ``uvu``) or ``"elementwise"`` (e3nn ``uuu``).
        backend: ``"cg"`` (exact Clebsch–Gordan, e3nn numbers), ``"gaunt"`` (Gaunt product
            by 2D FFT), ``"grid"`` (Gaunt product on a spherical grid) or ``"cp"`` (CP
            decomposition of the CG tensor), or any other name in :data:`BACKENDS`. Each
            backend documents what its weights mean.
        chunk_size: samples per chunk on CPU (``None``: automatic, ``0``: never chunk). On
            CPU the products are bound by memory traffic: running ``N`` samples in chunks
            whose intermediates stay in cache is faster for large ``N`` (forward and
            backward; each chunk's backward then also runs on cache-sized tensors; timings
            in ``benchmarks/README.md``). The automatic size keeps the largest intermediate
            near ``CHUNK_FLOATS`` numbers. CUDA tensors are never chunked.
        engine: how the product is executed (:mod:`mlip.kernels.tp.engines`): ``"auto"``
            (default: ``cuequivariance`` for CUDA inputs where the backend has it and its CUDA
            ops import, else ``torch``), ``"torch"`` or ``"cuequivariance"`` (``cg`` only; on
            CPU it runs cuEquivariance's pure-torch fallback). Same weights and numbers on
            every engine; switch later with :attr:`engine` or
            :func:`mlip.kernels.set_engine`.
        **options: backend options (e.g. ``resolution`` for ``grid``, ``rank`` for ``cp``).

    Shapes: ``x1 [N, irreps_in1.dim]``, ``x2 [N, irreps_in2.dim]``, ``weight [N, weight_numel]``
    (per sample) or ``[weight_numel]`` (shared); returns ``[N, irreps_out.dim]``, in e3nn's
    multiplicity-major layout. ``x1``, ``x2`` and ``weight`` share dtype and device.

    Errors: :class:`~mlip.errors.ConfigError` for an unknown backend, an option the backend
    does not have, a bad option value (naming the option and the backend) or an engine the
    backend does not have (naming the backend and its engines);
    :class:`~mlip.errors.KernelInputError` for irreps, mode, ``chunk_size`` or tensors that do
    not fit (naming the argument). Both are ``ValueError`` subclasses.
    """

    def __init__(self, irreps_in1, irreps_in2, irreps_out, *, mode: str = "channelwise", backend: str = "cg",
                 chunk_size: int | None = None, engine: str = "auto", **options):
        super().__init__()
        check_chunk_size(chunk_size)
        if mode not in MODES:
            raise KernelInputError(f"mode must be one of {MODES}, got {mode!r}")
        if backend not in BACKENDS:
            raise ConfigError(f"unknown tensor-product backend {backend!r}; known backends: {sorted(BACKENDS)}")
        _check_options(backend, options)
        in1 = as_irreps(irreps_in1, "irreps_in1")
        in2 = as_irreps(irreps_in2, "irreps_in2")
        out = as_irreps(irreps_out, "irreps_out")
        c, irs1 = split_channels(in1, "irreps_in1")
        c2, irs2 = split_channels(in2, "irreps_in2", channels=1 if mode == "channelwise" else c)
        _, irs3 = split_channels(out, "irreps_out", channels=c)
        spec = TPSpec(in1, in2, out, c, tuple(irs1), tuple(irs2), tuple(irs3), mode)
        self.irreps_in1, self.irreps_in2, self.irreps_out = in1, in2, out
        self.mode, self.backend = mode, backend
        self.impl = BACKENDS[backend](spec, **options)
        self.weight_numel = self.impl.weight_numel
        self.engines = tuple(self.impl.engines)
        self.engine_owner = f"tensor-product backend {backend!r}"
        self._executors: dict = {}
        self.engine = engine
        if chunk_size is None:
            chunk_size = chunk_size_for(self.impl.floats_per_sample())
        self.chunk_size = chunk_size

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        self._check(x1, x2, weight)
        if x1.shape[0] == 0:
            # no samples (e.g. a structure without edges): an empty result that is still
            # connected to the inputs, so autograd.grad works without allow_unused
            return (x1.sum() + x2.sum() + weight.sum()).mul(0).expand(0, self.irreps_out.dim)
        if weight.dim() == 1:
            weight = weight.unsqueeze(0)
        run = self.executor(x1.device)
        k = self.chunk_size
        if not in_chunks(x1, k):
            return run(x1, x2, weight)
        if isinstance(run, TPBackend):
            return run.forward_chunked(x1, x2, weight, k)
        return run_in_chunks(run, (x1, x2), weight, k)

    def resolved_engine(self, device) -> str:
        """The engine that runs this product on ``device`` (``"torch"`` or ``"cuequivariance"``)."""
        return resolve_engine(self._engine, torch.device(device), self.engines)

    def executor(self, device):
        """What runs the product on ``device``: the backend itself (``torch``) or the backend's
        executor on another engine (built once, kept outside the state dict)."""
        name = self.resolved_engine(device)
        if name == "torch":
            return self.impl
        run = self._executors.get(name)
        if run is None:
            run = self._executors[name] = self.impl.engine_executor(name)
        return run

    @property
    def supports_rows(self) -> bool:
        """Whether :meth:`forward_rows` is available: ``cg`` on its pairwise route, ``grid`` in
        channelwise mode with natural-parity irreps, ``cp`` always; not ``gaunt``."""
        return self.impl.supports_rows

    @property
    def rows_plans(self) -> tuple:
        """:class:`~mlip.kernels.tp.layout.RowPlan` of ``x1``, ``x2`` and the output: their
        ``stack`` / ``unstack`` turn multiplicity-major features into the stacked
        component-major rows of :meth:`forward_rows` and back."""
        return self.impl.plan1, self.impl.plan2, self.impl.plan3

    def forward_rows(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The same product on component-major rows: ``x1 [D1, N, C]``, ``x2 [D2, N, C2]``
        (``D = sum(2l+1)`` of the irreps, ``C2 = 1`` in channelwise mode), ``weight`` as in
        :meth:`forward`; returns ``[D3, N, C]``. Not chunked.

        For callers that keep features component-major across several steps (the
        interaction gathers edge rows from node rows and scatters messages back to nodes
        in this layout), so the relayouts run once per node instead of once per edge.
        Only where :attr:`supports_rows`.
        """
        if not self.supports_rows:
            raise RuntimeError(f"TensorProduct: backend {self.backend!r} has no component-major route here")
        p1, p2, _ = self.rows_plans
        n = x1.shape[1] if x1.dim() == 3 else -1
        for name, t, plan in (("x1", x1, p1), ("x2", x2, p2)):
            if t.dim() != 3 or t.shape[0] != plan.rows or t.shape[1] != n or t.shape[2] != plan.channels:
                want = f"[{plan.rows}, N, {plan.channels}]"
                raise KernelInputError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
        _check_dtypes(x1, x2, weight)
        if weight.dim() == 1:
            weight = weight.unsqueeze(0)
        if weight.dim() != 2 or weight.shape[-1] != self.weight_numel or weight.shape[0] not in (1, n):
            raise _weight_error(n, self.weight_numel, tuple(weight.shape))
        return self.executor(x1.device).forward_rows(x1, x2, weight)

    def _check(self, x1, x2, weight) -> None:
        for name, t, dim in (("x1", x1, self.irreps_in1.dim), ("x2", x2, self.irreps_in2.dim)):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != dim:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise KernelInputError(f"{name}: expected shape [N, {dim}], got {shape}")
        if x1.shape[0] != x2.shape[0]:
            raise KernelInputError(f"x1 and x2 must have the same N, got {x1.shape[0]} and {x2.shape[0]}")
        n = x1.shape[0]
        if not isinstance(weight, torch.Tensor) or not (
            (weight.dim() == 2 and weight.shape == (n, self.weight_numel))
            or (weight.dim() == 1 and weight.shape[0] == self.weight_numel)
        ):
            got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise _weight_error(n, self.weight_numel, got)
        _check_dtypes(x1, x2, weight)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, engine={self._engine!r}"
