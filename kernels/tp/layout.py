"""Layout changes between e3nn's multiplicity-major features and component-major row blocks.

A feature ``x [N, C*d]`` (``C`` channels of each irrep, multiplicity-major) is regrouped
into row blocks ``[rows, N, C]``: each row is one component of one irrep for all samples
and channels, contiguous. Products of a few components with many ``(sample, channel)``
pairs then vectorise over the long axis, and one GEMM with a ``[k, rows]`` matrix acts on
all samples and channels at once.

A :class:`RowPlan` says which components go to which block and in which order (the ``cg``
backend uses one block per irrep; strided groups allow e.g. even/odd components in separate
blocks). The two directions are a pair of autograd Functions, each the other's backward,
so gradients also arrive as contiguous blocks in a single copy (autograd's own
backward of ``permute`` + ``split`` hands on permuted views, which make every later
broadcast multiply and reduction several times slower on CPU, and copies twice), and any
order of derivatives works.
"""

from __future__ import annotations

import torch

__all__ = ["RowPlan"]


class RowPlan:
    """Which components of which irreps fill which row block.

    Args:
        dims: ``2l+1`` of each irrep, in feature order.
        channels: C.
        groups: per block, a list of ``(irrep index, start, step)``: the components
            ``start, start+step, ...`` of that irrep, appended to the block in that order.
            Every component of every irrep must appear exactly once.
    """

    def __init__(self, dims, channels: int, groups):
        self.channels = int(channels)
        self.dims = [int(d) for d in dims]
        offsets = [0]
        for d in self.dims:
            offsets.append(offsets[-1] + self.channels * d)
        self.width = offsets[-1]
        self.entries = []  # (flat offset, dim, start, step, block, first row, rows)
        self.rows = []
        seen = set()
        for b, group in enumerate(groups):
            r = 0
            for i, start, step in group:
                comps = list(range(start, self.dims[i], step))
                for m in comps:
                    if (i, m) in seen:
                        raise ValueError(f"RowPlan: component {m} of irrep {i} appears twice")
                    seen.add((i, m))
                self.entries.append((offsets[i], self.dims[i], start, step, b, r, len(comps)))
                r += len(comps)
            self.rows.append(r)
        if len(seen) != sum(self.dims):
            raise ValueError("RowPlan: every component of every irrep must appear once")

    @classmethod
    def per_irrep(cls, dims, channels: int) -> "RowPlan":
        """One block per irrep, components in order."""
        return cls(dims, channels, [[(i, 0, 1)] for i in range(len(dims))])

    def to_rows(self, x: torch.Tensor) -> tuple:
        """``[N, C*d]`` -> tuple of contiguous ``[rows, N, C]`` blocks (differentiable)."""
        return _ToRows.apply(x, self)

    def from_rows(self, blocks) -> torch.Tensor:
        """Tuple of ``[rows, N, C]`` blocks -> ``[N, C*d]`` (differentiable)."""
        return _FromRows.apply(self, *blocks)

    # plain (non-autograd) copies -----------------------------------------------------------
    def _gather(self, x: torch.Tensor) -> tuple:
        n, C = x.shape[0], self.channels
        out = [x.new_empty(r, n, C) for r in self.rows]
        for off, dim, start, step, b, r0, k in self.entries:
            src = x[:, off : off + C * dim].view(n, C, dim)[:, :, start::step]
            out[b][r0 : r0 + k].copy_(src.permute(2, 0, 1))
        return tuple(out)

    def _scatter(self, blocks) -> torch.Tensor:
        ref = next(b for b in blocks if b is not None)
        n, C = ref.shape[1], self.channels
        out = ref.new_empty(n, self.width)
        for off, dim, start, step, b, r0, k in self.entries:
            dst = out[:, off : off + C * dim].view(n, C, dim)[:, :, start::step]
            if blocks[b] is None:
                dst.zero_()
            else:
                dst.copy_(blocks[b][r0 : r0 + k].expand(k, n, C).permute(1, 2, 0))
        return out


class _ToRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, plan):
        ctx.plan = plan
        return plan._gather(x)

    @staticmethod
    def backward(ctx, *gs):
        if all(g is None for g in gs):
            return None, None
        return _FromRows.apply(ctx.plan, *gs), None


class _FromRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, *blocks):
        ctx.plan = plan
        return plan._scatter(blocks)

    @staticmethod
    def backward(ctx, g):
        return (None, *_ToRows.apply(g, ctx.plan))
