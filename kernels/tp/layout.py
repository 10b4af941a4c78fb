"""Layout changes between e3nn's multiplicity-major features and component-major blocks.

A feature ``x [N, C*d]`` (``C`` channels of each irrep, multiplicity-major) is regrouped
into one block ``[2l+1, N, C]`` per irrep: each row is one component for all samples and
channels, contiguous. Products of a few components with many ``(sample, channel)`` pairs
then vectorise over the long axis, and one GEMM with a ``[k, rows]`` matrix acts on all
samples and channels at once.

The two directions are a pair of autograd Functions, each the other's backward, so
gradients also arrive as contiguous blocks in a single copy (autograd's own backward of
``permute`` + ``split`` hands on permuted views, which make every later broadcast multiply
and reduction several times slower on CPU, and copies twice), and any order of
derivatives works.
"""

from __future__ import annotations

import torch

__all__ = ["RowPlan"]


class RowPlan:
    """Component-major layout of a multiplicity-major feature: one block per irrep.

    Args:
        dims: ``2l+1`` of each irrep, in feature order.
        channels: C.
    """

    def __init__(self, dims, channels: int):
        self.channels = int(channels)
        self.dims = [int(d) for d in dims]
        self.width = self.channels * sum(self.dims)

    def to_rows(self, x: torch.Tensor) -> tuple:
        """``[N, C*d]`` -> tuple of contiguous ``[2l+1, N, C]`` blocks (differentiable)."""
        return _ToRows.apply(x, self)

    def from_rows(self, blocks) -> torch.Tensor:
        """Tuple of ``[2l+1, N, C]`` blocks -> ``[N, C*d]`` (differentiable)."""
        return _FromRows.apply(self, *blocks)

    def _views(self, flat: torch.Tensor):
        """Each irrep's ``[N, C, 2l+1]`` view of a multiplicity-major ``flat``."""
        n, C, o = flat.shape[0], self.channels, 0
        for d in self.dims:
            yield flat[:, o : o + C * d].view(n, C, d)
            o += C * d

    # plain (non-autograd) copies -----------------------------------------------------------
    def _gather(self, x: torch.Tensor) -> tuple:
        return tuple(v.permute(2, 0, 1).contiguous() for v in self._views(x))

    def _scatter(self, blocks) -> torch.Tensor:
        ref = next(b for b in blocks if b is not None)
        out = ref.new_empty(ref.shape[1], self.width)
        for dst, b in zip(self._views(out), blocks):
            if b is None:
                dst.zero_()
            else:
                dst.copy_(b.expand(dst.shape[2], *dst.shape[:2]).permute(1, 2, 0))
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
