"""Building blocks of the potential: equivariant linear maps, the interaction (message)
block, the many-body product and the readouts.

Features are e3nn irreps in multiplicity-major layout (``"Cx0e+Cx1o+Cx2e"``: C scalars,
then C blocks of 3, then C blocks of 5). Every product comes from :mod:`mlip.kernels`:
the edge :class:`~mlip.kernels.TensorProduct`, the many-body product
(:func:`~mlip.kernels.many_body_product`, which the backend chooses, with its own weight
layout) and the element-dependent :class:`~mlip.kernels.ElementLinear`; this module never
branches on a backend's name, and the engine that runs them is switched by
:func:`mlip.kernels.set_engine`. Parameters are created in float64 from an explicit
``torch.Generator``; the model casts them to its dtype.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch.utils.checkpoint import checkpoint

from mlip.kernels import ElementLinear, TensorProduct, many_body_product, under_this_order

from .radial import RadialMLP, silu_norm

__all__ = [
    "hidden_irreps",
    "IrrepsLinear",
    "ElementLinear",
    "Interaction",
    "Layer",
    "LinearReadout",
    "NonLinearReadout",
]


#: edges per node in one gather of neighbour features (see Interaction.forward)
GATHER_EDGES_PER_NODE = 8


def _pieces(t: torch.Tensor, size: int, dim: int = 0) -> tuple:
    """``t.split(size, dim)``, or ``(t,)`` when it fits in one piece (a one-piece split still
    copies its gradient in the backward)."""
    return (t,) if t.shape[dim] <= size else t.split(size, dim)


def hidden_irreps(channels: int, l_max: int) -> o3.Irreps:
    """``Cx0e + Cx1o + ... + Cx(l_max)`` with natural parity (-1)^l."""
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(l_max + 1)])


def _blocks(irreps: o3.Irreps) -> list[tuple[int, o3.Irrep, int, int]]:
    """``(mul, ir, start, stop)`` of each irreps entry in the flat layout."""
    out, start = [], 0
    for mul, ir in irreps:
        out.append((mul, ir, start, start + mul * ir.dim))
        start += mul * ir.dim
    return out


def _randn(*shape, generator: torch.Generator, std: float = 1.0) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.randn(*shape, generator=generator, dtype=torch.float64) * std)


class IrrepsLinear(torch.nn.Module):
    """Equivariant linear map: each output irrep is a mix of the channels of the same irrep
    in the input, ``y_l = x_l @ W_l / sqrt(mul_in)``. Input irreps absent from the output
    are dropped. Shapes: ``[N, irreps_in.dim]`` -> ``[N, irreps_out.dim]``."""

    def __init__(self, irreps_in, irreps_out, *, generator: torch.Generator):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        src = {ir: blk for blk in _blocks(self.irreps_in) for ir in [blk[1]]}
        self.plan = []
        weights = []
        for mul_out, ir, _, _ in _blocks(self.irreps_out):
            if ir not in src:
                raise ValueError(f"IrrepsLinear: output irrep {ir} is not in the input {self.irreps_in}")
            mul_in, _, a, b = src[ir]
            self.plan.append((a, b, mul_in, ir.dim, 1.0 / math.sqrt(mul_in)))
            weights.append(_randn(mul_in, mul_out, generator=generator))
        self.weights = torch.nn.ParameterList(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = []
        for (a, b, mul_in, dim, scale), w in zip(self.plan, self.weights):
            w = w * scale
            if dim == 1:
                out.append(x[:, a:b] @ w)
            else:
                y = x[:, a:b].reshape(n, mul_in, dim).transpose(1, 2) @ w  # [N, dim, mul_out]
                out.append(y.transpose(1, 2).reshape(n, -1))
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]


class Interaction(torch.nn.Module):
    """Messages of one layer: ``A_i = Linear( sum_j TP(Linear(h)_j, Y(r_ij); R(r_ij)) / avg_num_neighbors )``.

    ``TP`` is a channelwise :class:`~mlip.kernels.TensorProduct` of the neighbour's features
    with the edge spherical harmonics; its weights come per edge from the radial MLP, so the
    MLP outputs ``tp.weight_numel`` numbers whatever the backend.

    Shapes: ``h [N, irreps_in.dim]``, ``sh [E, sh_irreps.dim]``, ``edge_feats [E, num_radial]``
    (Bessel basis times cutoff envelope), ``edge_index [2, E]`` (row 0 source j, row 1 target i)
    -> ``[N, irreps_msg.dim]``.
    """

    def __init__(self, irreps_in, sh_irreps, irreps_msg, *, num_radial: int, radial_mlp: list[int],
                 avg_num_neighbors: float, backend: str, options: dict, generator: torch.Generator):
        super().__init__()
        self.irreps_in, self.irreps_msg = o3.Irreps(irreps_in), o3.Irreps(irreps_msg)
        self.linear_up = IrrepsLinear(irreps_in, irreps_in, generator=generator)
        self.tp = TensorProduct(irreps_in, sh_irreps, irreps_msg, mode="channelwise", backend=backend, **options)
        self.radial = RadialMLP([num_radial, *radial_mlp, self.tp.weight_numel], generator=generator)
        self.linear = IrrepsLinear(irreps_msg, irreps_msg, generator=generator)
        self.inv_avg = 1.0 / float(avg_num_neighbors)
        #: edges per chunk on CPU (``None``: the tensor product's own chunk size; 0: no chunks)
        self.edge_chunk: int | None = None
        #: recompute each edge chunk's messages in the backward instead of keeping its
        #: intermediates (memory of one chunk instead of all edges; see Potential.low_memory)
        self.recompute = False
        #: run the edges on component-major rows where the tensor product supports it
        #: (same numbers; False: the multiplicity-major route, for comparisons)
        self.use_rows = True

    def forward(self, h, sh, edge_feats, edge_index):
        src, dst = edge_index[0], edge_index[1]
        if src.numel() == 0:  # no neighbours anywhere (isolated atoms): no messages
            return h.new_zeros(h.shape[0], self.irreps_msg.dim)
        h = self.linear_up(h)
        e, n = src.shape[0], h.shape[0]
        # Component-major rows (where the tensor product has that route): node features
        # become [D, N, C] once, edges gather rows (index_select on dim 1), messages come
        # back as rows and are summed into [D, N, C] node rows, which become
        # multiplicity-major once: the relayouts cost O(N), not O(E) in each direction.
        rows = self.use_rows and self.tp.supports_rows
        axis = 1 if rows else 0
        if rows:
            plan_in, _, plan_out = self.tp.rows_plans
            h = plan_in.stack(h)
            sh = sh.t().contiguous().unsqueeze(-1)  # [D2, E, 1]
            a = h.new_zeros(plan_out.rows, n, plan_out.channels)
        else:
            a = h.new_zeros(n, self.irreps_msg.dim)
        # On CPU, edges go in chunks through radial MLP -> TP -> scatter, so the per-edge
        # tensors (weights, messages: E x hundreds of numbers) stay cache-sized and are never
        # materialised whole, forward and backward. Per-edge inputs are cut with split (its
        # backward is one concatenation; a slice's is a zero-filled tensor of the whole input),
        # and the neighbour features are gathered per group of chunks: the backward of a
        # gather is a dense [N, dim] gradient, so a gather per chunk would cost O(N) per chunk,
        # quadratic in the system size. A group holds >= GATHER_EDGES_PER_NODE * N edges.
        k = self.tp.chunk_size if self.edge_chunk is None else self.edge_chunk
        if h.device.type != "cpu" or not k:
            k = e
        group = k * max(1, -(-GATHER_EDGES_PER_NODE * n // k))
        recompute = self.recompute and torch.is_grad_enabled()
        messages = self._messages_rows if rows else self._messages
        for src_g, dst_g, sh_g, ef_g in zip(_pieces(src, group), _pieces(dst, group), _pieces(sh, group, axis),
                                            _pieces(edge_feats, group)):
            x_g = h.index_select(axis, src_g)
            for x, s, f, d in zip(_pieces(x_g, k, axis), _pieces(sh_g, k, axis), _pieces(ef_g, k), _pieces(dst_g, k)):
                if recompute:  # keep only the chunk's inputs; its messages are recomputed in backward
                    # the recomputation runs in the backward: same kernel route as now
                    m = checkpoint(under_this_order(messages), x, s, f, use_reentrant=False)
                else:
                    m = messages(x, s, f)
                a.index_add_(axis, d, m)
        if rows:
            a = plan_out.unstack(a)
        return self.linear(a * self.inv_avg)

    def _messages(self, x, sh, edge_feats):
        return self.tp(x, sh, self.radial(edge_feats))

    def _messages_rows(self, x, sh, edge_feats):
        return self.tp.forward_rows(x, sh, self.radial(edge_feats))


class LinearReadout(torch.nn.Module):
    """Atomic energy contribution ``[N]`` from the scalar channels ``[N, C]`` (linear)."""

    def __init__(self, channels: int, *, generator: torch.Generator):
        super().__init__()
        self.weight = _randn(channels, 1, generator=generator, std=1.0 / math.sqrt(channels))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return (s @ self.weight).squeeze(-1)


class NonLinearReadout(torch.nn.Module):
    """Atomic energy contribution ``[N]`` from the scalar channels ``[N, C]``:
    ``Linear(C -> hidden) -> SiLU -> Linear(hidden -> 1)``."""

    def __init__(self, channels: int, hidden: int, *, generator: torch.Generator):
        super().__init__()
        self.w1 = _randn(channels, hidden, generator=generator, std=1.0 / math.sqrt(channels))
        self.w2 = _randn(hidden, 1, generator=generator, std=1.0 / math.sqrt(hidden))
        self.act_norm = silu_norm()

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return (torch.nn.functional.silu(s @ self.w1) * self.act_norm @ self.w2).squeeze(-1)


class Layer(torch.nn.Module):
    """One message-passing layer with residual update:
    ``h' = Linear(ManyBody(Interaction(h))) + ElementLinear(h)``.

    Shapes: ``h [N, irreps_in.dim]`` -> ``[N, irreps_out.dim]``; other inputs as
    :class:`Interaction`, plus ``element [N]``.
    """

    def __init__(self, irreps_in, sh_irreps, irreps_msg, irreps_out, *, num_elements: int, correlation: int,
                 num_radial: int, radial_mlp: list[int], avg_num_neighbors: float,
                 backend_interaction: str, options_interaction: dict,
                 backend_product: str, options_product: dict, generator: torch.Generator):
        super().__init__()
        self.interaction = Interaction(
            irreps_in, sh_irreps, irreps_msg, num_radial=num_radial, radial_mlp=radial_mlp,
            avg_num_neighbors=avg_num_neighbors, backend=backend_interaction, options=options_interaction,
            generator=generator,
        )
        self.product = many_body_product(backend_product, irreps_msg, irreps_out, correlation, num_elements,
                                         options=options_product, generator=generator)
        self.linear = IrrepsLinear(irreps_out, irreps_out, generator=generator)
        # residual on the output irreps the input also has (a prefix: the scalars in layer 1)
        ins = {ir for _, ir in o3.Irreps(irreps_in)}
        shared = o3.Irreps([(mul, ir) for mul, ir in o3.Irreps(irreps_out) if ir in ins])
        if list(o3.Irreps(irreps_out)[: len(shared)]) != list(shared):
            raise ValueError(f"Layer: irreps shared by {irreps_in} and {irreps_out} must lead the output")
        self.skip_dim = shared.dim
        self.skip = ElementLinear(irreps_in, shared, num_elements, generator=generator)

    def forward(self, h, element, sh, edge_feats, edge_index):
        a = self.interaction(h, sh, edge_feats, edge_index)
        out = self.linear(self.product(a, element))
        sc = self.skip(h, element)
        if self.skip_dim == out.shape[1]:
            return out + sc
        return torch.cat([out[:, : self.skip_dim] + sc, out[:, self.skip_dim :]], dim=1)
