"""What every tensor-product backend shares: the description of the product and constant caching."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3

from mlip.errors import KernelInputError

from ..irreps import channel_dim, channel_layout
from .layout import RowPlan

__all__ = ["TPSpec", "TPBackend", "Constants", "MODES", "CHUNK_FLOATS", "check_chunk_size", "chunk_size_for",
           "in_chunks", "run_in_chunks", "spans", "rows_of", "grads_in_chunks", "grads_by_recompute", "second_order",
           "second_order_expected", "under_this_order"]

MODES = ("channelwise", "elementwise")


@dataclass(frozen=True)
class TPSpec:
    """Description of a tensor product, independent of how it is executed.

    ``channels`` is C. ``irs1``/``irs2``/``irs3`` are the per-channel irreps of input 1,
    input 2 and the output. In ``channelwise`` mode input 2 has one channel.
    """

    irreps_in1: o3.Irreps
    irreps_in2: o3.Irreps
    irreps_out: o3.Irreps
    channels: int
    irs1: tuple
    irs2: tuple
    irs3: tuple
    mode: str

    @property
    def channels2(self) -> int:
        return 1 if self.mode == "channelwise" else self.channels

    @property
    def d1(self) -> int:
        return channel_dim(self.irs1)

    @property
    def d2(self) -> int:
        return channel_dim(self.irs2)

    @property
    def d3(self) -> int:
        return channel_dim(self.irs3)


class Constants(torch.nn.Module):
    """Holds float64 constants and hands out casts per dtype/device.

    Constants are derived deterministically from the irreps, so they are not part of the
    state dict; they are kept in float64 and cast once per (dtype, device), which keeps
    float64 results exact whatever dtype the module was created under.
    """

    def __init__(self):
        super().__init__()
        self._const64: dict[str, torch.Tensor] = {}
        self._cast: dict[tuple, torch.Tensor] = {}

    def add_const(self, name: str, value) -> None:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if value.is_floating_point():
            value = value.to(torch.float64)
        self._const64[name] = value
        self._cast = {}

    def const(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Constant ``name`` on ``like``'s device (and dtype, for floating constants)."""
        key = (name, like.dtype, like.device)
        t = self._cast.get(key)
        if t is None:
            src = self._const64[name]
            t = src.to(device=like.device, dtype=like.dtype if src.is_floating_point() else src.dtype)
            self._cast[key] = t
        return t


#: target size (numbers) of the largest per-chunk intermediate on CPU (see :func:`chunk_size_for`)
CHUNK_FLOATS = int(os.environ.get("MLIP_TP_CHUNK_FLOATS", str(1 << 20)))


def chunk_size_for(floats_per_sample: int) -> int:
    """Samples per CPU chunk for a kernel whose largest intermediate has ``floats_per_sample``
    numbers per sample: about ``CHUNK_FLOATS`` numbers per chunk (cache-sized: on CPU these
    kernels are bound by memory traffic), at least 16 samples."""
    return max(16, CHUNK_FLOATS // max(1, int(floats_per_sample)))


def check_chunk_size(chunk_size) -> None:
    """A ``chunk_size`` argument is ``None`` (automatic) or an integer >= 0 (``0``: never chunk);
    anything else raises :class:`~mlip.errors.KernelInputError`."""
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 0):
        raise KernelInputError(f"chunk_size must be None or an integer >= 0, got {chunk_size!r}")


def in_chunks(x: torch.Tensor, k: int) -> bool:
    """Whether samples ``x [N, ...]`` run in chunks of ``k``: on CPU only (CUDA tensors are
    never chunked), ``k > 0`` and more than ``k`` samples."""
    return bool(k) and x.shape[0] > k and x.device.type == "cpu"


def run_in_chunks(fn, xs: tuple, weight: torch.Tensor, k: int) -> torch.Tensor:
    """``fn(*xs, weight)`` on consecutive chunks of ``k`` samples, concatenated (every tensor
    of ``xs`` is cut on dim 0; ``weight`` ``[N, numel]`` is cut with them, ``[1, numel]`` is
    shared)."""
    n = xs[0].shape[0]
    ws = weight.split(k) if weight.shape[0] == n else [weight] * ((n + k - 1) // k)
    return torch.cat([fn(*parts, w) for *parts, w in zip(*(x.split(k) for x in xs), ws)])


_ORDER = threading.local()


@contextlib.contextmanager
def second_order(enabled: bool = True):
    """Within this block, derivatives of gradients will be taken (``create_graph``, e.g. a
    potential trained on forces): kernels with a written-out first-order backward may then
    take their autograd route instead, which keeps the graph once rather than recomputing
    the product in the backward. Only speed depends on it, never a number. Per thread;
    blocks nest (the innermost wins). :class:`mlip.Potential` sets it from its
    ``create_graph``."""
    prev = getattr(_ORDER, "on", False)
    _ORDER.on = bool(enabled)
    try:
        yield
    finally:
        _ORDER.on = prev


def second_order_expected() -> bool:
    """Whether the caller is inside a :func:`second_order` block (this thread)."""
    return getattr(_ORDER, "on", False)


def under_this_order(fn):
    """``fn`` bound to the :func:`second_order` hint in force now: for code that runs ``fn``
    again later, outside this block (``torch.utils.checkpoint`` recomputes in the backward,
    and must take the same route as the original forward, or it saves other tensors)."""
    flag = second_order_expected()

    def run(*args, **kwargs):
        with second_order(flag):
            return fn(*args, **kwargs)

    return run


# products whose chunks run inside one autograd node (grid's half-grid route, cp): the chunk
# loop's pieces, shared ----------------------------------------------------------------------

def spans(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[a, b)`` ranges of at most ``chunk`` samples covering ``n`` (one range when chunk is 0)."""
    if not chunk or n <= chunk:
        return [(0, n)]
    return [(a, min(a + chunk, n)) for a in range(0, n, chunk)]


def rows_of(weight: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Samples ``[a, b)`` of per-sample weights; shared weights ``[1, numel]`` as they are."""
    return weight if weight.shape[0] == 1 else weight[a:b]


def grads_in_chunks(step, ranges, x1, x2, weight, need) -> tuple:
    """Gradients of ``(x1, x2, weight)`` (``None`` where ``need`` is False) of a product run in
    chunks of samples (dim 0) inside one autograd node, without concatenation:
    ``step(i, a, b, out)`` computes chunk ``i`` (samples ``[a, b)``), writing its x1 and x2
    gradients into ``out[0]``, ``out[1]`` (the chunk's rows of the whole gradients, or
    ``None``) and its weight gradient into ``out[2]`` when the weights are per sample; it
    returns the three gradients. Shared weights ``[1, numel]`` sum the chunks' gradients."""
    shared = weight.shape[0] == 1
    outs = [t.new_empty(t.shape) if k else None for t, k in zip((x1, x2, weight), need)]
    if shared and need[2]:
        outs[2].zero_()
    for i, (a, b) in enumerate(ranges):
        o = [None if t is None else t[a:b] for t in outs[:2]] + [None if shared or not need[2] else outs[2][a:b]]
        g = step(i, a, b, o)
        if shared and need[2]:
            outs[2] += g[2]
    return tuple(outs)


def grads_by_recompute(fn, xs, gy, need) -> tuple:
    """The gradients of ``fn(*xs)`` (``None`` where ``need`` is False) with their own graph
    (``create_graph``: derivatives of the gradient are wanted), for a written-out backward.
    ``fn`` recomputes the product with autograd ops on fresh nodes (views) that stand for the
    inputs, so that each gradient is the partial derivative along this product only (x1 may
    itself depend on x2, e.g. in a potential's second layer) while it stays differentiable
    in the inputs."""
    with torch.enable_grad():
        views = [t.view_as(t) for t in xs]
        y = fn(*views)
    ins = [t for t, k in zip(views, need) if k]
    gs = iter(torch.autograd.grad(y, ins, gy, create_graph=True))
    return tuple(next(gs) if k else None for k in need)


class TPBackend(Constants):
    """Base class of backends: the description of the product plus its constants."""

    name = "base"

    def __init__(self, spec: TPSpec):
        super().__init__()
        self.spec = spec
        #: component-major layouts of x1, x2 and the output (see forward_rows)
        self.plan1, self.plan2, self.plan3 = (
            RowPlan([ir.dim for ir in irs], c)
            for irs, c in ((spec.irs1, spec.channels), (spec.irs2, spec.channels2), (spec.irs3, spec.channels)))

    #: whether :meth:`forward_rows` is available
    supports_rows: bool = False

    #: engines that run this backend besides ``auto`` (see :mod:`mlip.kernels.tp.engines`)
    engines: tuple = ("torch",)

    #: which many-body product the model builds on this backend (see
    #: :func:`mlip.kernels.many_body_product`): ``"chain"`` of elementwise products of this
    #: backend, or ``"powers"`` (pointwise powers on the sphere, :mod:`mlip.kernels.tp.power`)
    many_body: str = "chain"

    def engine_executor(self, name: str):
        """Callable ``(x1, x2, weight) -> out`` (plus ``forward_rows``) running this product on
        engine ``name`` (one of :attr:`engines` other than ``torch``)."""
        raise NotImplementedError(f"{self.name}: no engine {name!r}")

    #: options under which the product is exactly equivariant (``cp`` is only approximately
    #: so below full rank); checks that need exactness (tests, parity checks) pass these
    exact_options: dict = {}

    def forward_chunked(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
        """The product on CPU in chunks of ``k`` samples (``N > k``, multiplicity-major inputs,
        ``weight [N|1, numel]``). By default each chunk runs on its own and the results are
        concatenated; a backend may run the chunks inside one autograd node instead."""
        return run_in_chunks(self, (x1, x2), weight, k)

    def forward_rows(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The product on stacked component-major rows (:meth:`RowPlan.stack`): ``x1 [D1, N, C]``,
        ``x2 [D2, N, C2]``, ``weight [N|1, weight_numel]`` -> ``[D3, N, C]``."""
        raise NotImplementedError(f"{self.name}: no component-major route")

    weight_numel: int = 0

    def floats_per_sample(self) -> int:
        """Size (in numbers) of the largest intermediate per sample; sets the CPU chunk size."""
        s = self.spec
        return s.channels * max(s.d1, s.d2, s.d3)

    def to_channels(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Multiplicity-major inputs -> channel layout ``[N, C, d1]``, ``[N, C2, d2]``."""
        s = self.spec
        return channel_layout(x1, s.irs1, s.channels), channel_layout(x2, s.irs2, s.channels2)

    def extra_repr(self) -> str:
        s = self.spec
        return f"{s.irreps_in1} x {s.irreps_in2} -> {s.irreps_out}, mode={s.mode}, weight_numel={self.weight_numel}"
