"""Layout changes between e3nn's multiplicity-major features and component-major rows.

A feature ``x [N, C*d]`` (``C`` channels of each irrep, multiplicity-major) is regrouped
into one block ``[2l+1, N, C]`` per irrep: each row is one component for all samples and
channels, contiguous. Products of a few components with many ``(sample, channel)`` pairs
then vectorise over the long axis, and one GEMM with a ``[k, rows]`` matrix acts on all
samples and channels at once. The blocks come either as a tuple (``to_rows`` /
``from_rows``) or stacked into one ``[D, N, C]`` tensor, ``D = sum(2l+1)`` (``stack`` /
``unstack``; a block is then a view ``t[o : o + 2l+1]``): the stacked form lets a caller
keep features component-major across steps, e.g. gather edge rows from node rows with
``index_select(1, ...)`` and scatter them back with ``index_add_(1, ...)``.

The two directions are a pair of autograd Functions, each the other's backward, so
gradients also arrive as contiguous blocks in a single copy (autograd's own backward of
``permute`` + ``split`` hands on permuted views, which make every later broadcast multiply
and reduction several times slower on CPU, and copies twice), and any order of
derivatives works.
"""

from __future__ import annotations

import torch

from mlip.errors import KernelInputError

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
        self.rows = sum(self.dims)
        self.width = self.channels * self.rows

    def to_rows(self, x: torch.Tensor) -> tuple:
        """``[N, C*d]`` -> tuple of contiguous ``[2l+1, N, C]`` blocks (differentiable)."""
        return _ToRows.apply(x, self, False)

    def from_rows(self, blocks) -> torch.Tensor:
        """Tuple of ``[2l+1, N, C]`` blocks -> ``[N, C*d]`` (differentiable)."""
        return _FromRows.apply(self, False, *blocks)

    def stack(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C*d]`` -> one contiguous ``[D, N, C]`` tensor, the blocks stacked (differentiable)."""
        return _ToRows.apply(x, self, True)

    def unstack(self, t: torch.Tensor) -> torch.Tensor:
        """``[D, N, C]`` -> ``[N, C*d]`` (differentiable); inverse of :meth:`stack`."""
        return _FromRows.apply(self, True, t)

    def block_views(self, x: torch.Tensor, stacked: bool) -> list:
        """Each irrep's components as a ``[2l+1, N, C]`` view of ``x``, stacked rows
        ``[D, N, C]`` or multiplicity-major ``[N, C*d]`` (strided there: no copy). For kernels
        that read or write the blocks in place (not differentiable by themselves)."""
        if stacked:
            return list(x.split(self.dims, dim=0))
        return [v.permute(2, 0, 1) for v in self._views(x)]

    def _views(self, flat: torch.Tensor):
        """Each irrep's ``[N, C, 2l+1]`` view of a multiplicity-major ``flat``."""
        n, C, o = flat.shape[0], self.channels, 0
        for d in self.dims:
            yield flat[:, o : o + C * d].view(n, C, d)
            o += C * d

    # plain (non-autograd) copies -----------------------------------------------------------
    def _gather(self, x: torch.Tensor, stacked: bool):
        if not stacked:
            return tuple(v.permute(2, 0, 1).contiguous() for v in self._views(x))
        out = x.new_empty(self.rows, x.shape[0], self.channels)
        o = 0
        for v, d in zip(self._views(x), self.dims):
            out[o : o + d].copy_(v.permute(2, 0, 1))
            o += d
        return out

    def stack_plain(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`stack` without autograd (for kernels whose backward is written out)."""
        return self._gather(x, True)

    def unstack_plain(self, t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`unstack` without autograd, into ``out`` ``[N, C*d]`` when given."""
        return self._scatter(t.split(self.dims, dim=0), out)

    def _scatter(self, blocks, out: torch.Tensor | None = None) -> torch.Tensor:
        ref = next(b for b in blocks if b is not None)
        if out is None:
            out = ref.new_empty(ref.shape[1], self.width)
        for dst, b in zip(self._views(out), blocks):
            if b is None:
                dst.zero_()
            else:
                dst.copy_(b.expand(dst.shape[2], *dst.shape[:2]).permute(1, 2, 0))
        return out


class _ToRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, plan, stacked):
        ctx.plan, ctx.stacked = plan, stacked
        return plan._gather(x, stacked)

    @staticmethod
    def backward(ctx, *gs):
        if all(g is None for g in gs):
            return None, None, None
        return _FromRows.apply(ctx.plan, ctx.stacked, *gs), None, None


class _FromRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, stacked, *blocks):
        ctx.plan, ctx.stacked = plan, stacked
        if stacked:
            (t,) = blocks
            if t.shape[0] != plan.rows:
                raise KernelInputError(f"expected {plan.rows} stacked rows, got shape {tuple(t.shape)}")
            blocks = t.split(plan.dims, dim=0)
        return plan._scatter(blocks)

    @staticmethod
    def backward(ctx, g):
        rows = _ToRows.apply(g, ctx.plan, ctx.stacked)
        return (None, None, rows) if ctx.stacked else (None, None, *rows)
