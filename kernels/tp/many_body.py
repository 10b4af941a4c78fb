"""The many-body (symmetric) product of a potential: ``B = sum_{k=1..nu} (A^k projected on irreps_out)``
with element-dependent weights, built for a tensor-product backend.

The backend class decides which product (its ``many_body`` attribute, so a backend added
with :func:`~mlip.kernels.tp.register_backend` as a subclass behaves as its parent):

* ``"chain"`` (``cg``, ``gaunt``, ``cp``): :class:`ProductChain`, a chain of elementwise
  tensor products of the backend, ``A_1 = w_1[z] * A``, ``A_k = TP_k(A_{k-1}, A; w_k[z])``,
  ``B = sum_k A_k`` (MACE's symmetric contraction in spirit). It runs on the engines of
  its products (``cuequivariance`` for ``cg``).
* ``"powers"`` (``grid``): :class:`PowerProduct`, pointwise powers of ``A`` as a function on
  the sphere (:class:`~mlip.kernels.tp.power.SymmetricPower`). Its numbers have no
  cuEquivariance counterpart, so it runs on ``torch`` only.

Weights are a learnable table per element (``weights`` ParameterList, rows indexed by each
atom's element); each class documents its layout. Shapes: ``a [N, irreps_in.dim]``,
``element [N]`` (index into the model's elements) -> ``[N, irreps_out.dim]``.
"""

from __future__ import annotations

import math

import torch

from mlip.errors import ConfigError, KernelInputError

from ..irreps import as_irreps
from .engines import EngineSwitch, check_engine_name
from .interface import BACKENDS, TensorProduct
from .power import SymmetricPower

__all__ = ["many_body_product", "ProductChain", "PowerProduct"]


def _randn(*shape, generator: torch.Generator, std: float = 1.0) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.randn(*shape, generator=generator, dtype=torch.float64) * std)


def _per_atom(table: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
    return table[0] if table.shape[0] == 1 else table.index_select(0, element)


class _ManyBody(EngineSwitch, torch.nn.Module):
    """What both many-body products share: irreps checks and the engine's owner name."""

    def __init__(self, irreps_in, irreps_out, correlation: int, backend: str):
        super().__init__()
        self.irreps_in, self.irreps_out = as_irreps(irreps_in, "irreps_in"), as_irreps(irreps_out, "irreps_out")
        if list(self.irreps_in[: len(self.irreps_out)]) != list(self.irreps_out):
            raise KernelInputError(f"many-body product: {self.irreps_out} must be a prefix of {self.irreps_in}")
        self.correlation, self.backend = int(correlation), backend
        self.out_dim = self.irreps_out.dim
        self.engine_owner = f"many-body product of tensor-product backend {backend!r}"


class ProductChain(_ManyBody):
    """``B = A_1 + ... + A_nu``, ``A_1 = w_1[z] * A`` (on ``irreps_out``), ``A_k = TP_k(A_{k-1}, A; w_k[z])``
    with elementwise :class:`~mlip.kernels.TensorProduct` of ``backend`` (the last one onto
    ``irreps_out``). Weights: ``weights[0]`` ``[num_elements, irreps_out.num_irreps]`` (one per
    irrep and channel), ``weights[k-1]`` ``[num_elements, TP_k.weight_numel]`` (the product's layout)."""

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int, *, backend: str,
                 options: dict, generator: torch.Generator, engine: str = "auto"):
        super().__init__(irreps_in, irreps_out, correlation, backend)
        self.engines = tuple(BACKENDS[backend].engines)
        self.tps = torch.nn.ModuleList()
        for k in range(2, self.correlation + 1):
            out = self.irreps_out if k == self.correlation else self.irreps_in
            self.tps.append(TensorProduct(self.irreps_in, self.irreps_in, out, mode="elementwise",
                                          backend=backend, **options))
        first = _randn(num_elements, self.irreps_out.num_irreps, generator=generator)
        rest = [_randn(num_elements, tp.weight_numel, generator=generator, std=1.0 / math.factorial(k + 2))
                for k, tp in enumerate(self.tps)]
        self.weights = torch.nn.ParameterList([first, *rest])
        # per (irrep, channel) weight of A_1, expanded to the components of irreps_out
        idx = []
        col = 0
        for mul, ir in self.irreps_out:
            for c in range(mul):
                idx += [col + c] * ir.dim
            col += mul
        self.register_buffer("expand_first", torch.tensor(idx, dtype=torch.long), persistent=False)
        self.engine = engine

    def _set_engine(self, name: str) -> None:
        super()._set_engine(name)
        for tp in self.tps:
            tp.engine = name

    def forward(self, a: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
        w1 = _per_atom(self.weights[0], element).index_select(-1, self.expand_first)
        out = a[:, : self.out_dim] * w1
        ak = a
        for k, tp in enumerate(self.tps):
            ak = tp(ak, a, _per_atom(self.weights[k + 1], element))
            out = out + ak[:, : self.out_dim]
        return out


class PowerProduct(_ManyBody):
    """``B = sum_k w_out[k][z] * P(f^k)``, ``f`` the function of ``A`` on the sphere
    (:class:`~mlip.kernels.tp.power.SymmetricPower`, always on its exact grid: a ``resolution``
    option of the grid backend is sized for the two-input products of the interaction).
    Weights: ``weights[0]`` ``[num_elements, SymmetricPower.weight_numel]`` in its layout
    (``w_in`` = 1 at the start, ``w_out[k]`` shrinking with k because ``f^k`` grows)."""

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int, *, backend: str,
                 options: dict, generator: torch.Generator, engine: str = "auto"):
        super().__init__(irreps_in, irreps_out, correlation, backend)
        self.power = SymmetricPower(self.irreps_in, self.irreps_out, self.correlation)
        C = self.irreps_in[0].mul
        n_in, n_out = len(self.irreps_in), len(self.irreps_out)
        w = torch.zeros(num_elements, n_in + self.correlation * n_out, C, dtype=torch.float64)
        w[:, :n_in] = 1.0
        f_scale = math.sqrt(self.irreps_in.dim / C)  # typical |f| for unit-variance components
        for k in range(self.correlation):
            std = 1.0 / f_scale**k / math.factorial(k + 1)
            w[:, n_in + k * n_out : n_in + (k + 1) * n_out] = (
                torch.randn(num_elements, n_out, C, generator=generator, dtype=torch.float64) * std
            )
        self.weights = torch.nn.ParameterList([torch.nn.Parameter(w.reshape(num_elements, -1))])
        self.tps = torch.nn.ModuleList()
        self.engine = engine

    def forward(self, a: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
        return self.power(a, _per_atom(self.weights[0], element))


_KINDS = {"chain": ProductChain, "powers": PowerProduct}


def many_body_product(backend: str, irreps_in, irreps_out, correlation: int, num_elements: int, *,
                      options: dict | None = None, generator: torch.Generator,
                      engine: str = "auto") -> torch.nn.Module:
    """The many-body product of ``backend`` (see the module docstring): a module
    ``(a [N, irreps_in.dim], element [N]) -> [N, irreps_out.dim]`` holding its own weight
    table ``weights`` (drawn in float64 from ``generator``), on engine ``engine``.

    ``irreps_out`` must be a prefix of ``irreps_in`` (e.g. its scalars). Errors:
    :class:`~mlip.errors.ConfigError` for an unknown backend or an engine its product lacks,
    :class:`~mlip.errors.KernelInputError` for irreps that do not fit.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown tensor-product backend {backend!r}; known backends: {sorted(BACKENDS)}")
    check_engine_name(engine)
    cls = _KINDS[BACKENDS[backend].many_body]
    return cls(irreps_in, irreps_out, correlation, num_elements, backend=backend, options=dict(options or {}),
               generator=generator, engine=engine)
