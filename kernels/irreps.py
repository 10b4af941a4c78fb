"""Irreps helpers shared by the tensor-product backends.

mlip uses e3nn's irreps vocabulary and layout: ``o3.Irreps("32x0e+32x1o")`` and
multiplicity-major features, i.e. for ``32x1o`` the 96 numbers are 32 blocks of 3.
The backends in :mod:`mlip.kernels.tp` work on one "channel" at a time: an irreps
string with the same multiplicity ``C`` on every irrep is split into ``C`` and
the per-channel list of irreps.
"""

from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3

from mlip.errors import KernelInputError

__all__ = [
    "as_irreps",
    "split_channels",
    "channel_dim",
    "gather_index",
    "channel_layout",
    "from_channels",
]


def as_irreps(irreps, name: str = "irreps") -> o3.Irreps:
    """Parse ``irreps`` (string, ``o3.Irreps`` or list) into ``o3.Irreps``; :class:`~mlip.errors.KernelInputError`
    (a ``ValueError``) if invalid."""
    try:
        return o3.Irreps(irreps)
    except Exception as exc:  # e3nn raises assorted types for bad strings
        raise KernelInputError(f"{name}: cannot parse {irreps!r} as e3nn irreps ({exc})") from None


def split_channels(irreps: o3.Irreps, name: str, channels: int | None = None) -> tuple[int, list[o3.Irrep]]:
    """Return ``(C, [ir, ...])`` for irreps whose every entry has multiplicity ``C``.

    ``channels`` forces a multiplicity (e.g. 1 for the edge harmonics of a channelwise TP).
    Raises ``KernelInputError`` (a ``ValueError``) naming the offending entry otherwise.
    """
    if len(irreps) == 0:
        raise KernelInputError(f"{name}: empty irreps")
    muls = {mul for mul, _ in irreps}
    if len(muls) != 1:
        raise KernelInputError(
            f"{name}: every irrep must have the same multiplicity (channels), got {irreps}"
        )
    mul = muls.pop()
    if channels is not None and mul != channels:
        raise KernelInputError(f"{name}: expected multiplicity {channels} on every irrep, got {irreps}")
    if mul < 1:
        raise KernelInputError(f"{name}: multiplicity must be positive, got {irreps}")
    return mul, [ir for _, ir in irreps]


def channel_dim(irs: Sequence[o3.Irrep]) -> int:
    """Dimension of one channel: sum of 2l+1 over the irreps."""
    return sum(ir.dim for ir in irs)


def gather_index(irs: Sequence[o3.Irrep], channels: int) -> torch.Tensor:
    """Index ``idx`` of shape ``[C, d]`` such that ``x[:, idx]`` maps a multiplicity-major
    feature ``x`` of shape ``[N, C*d]`` to the channel layout ``[N, C, d]``."""
    cols = []
    offset = 0
    for ir in irs:
        block = torch.arange(channels * ir.dim).view(channels, ir.dim) + offset
        cols.append(block)
        offset += channels * ir.dim
    return torch.cat(cols, dim=1)


def _block_pairs(flat: torch.Tensor, chan: torch.Tensor, dims, channels: int):
    """Per irrep, its ``[N, C, 2l+1]`` view in the multiplicity-major ``flat`` and in the
    channel-layout ``chan`` tensor."""
    n = flat.shape[0]
    o = f = 0
    for d in dims:
        yield flat[:, f : f + channels * d].view(n, channels, d), chan[:, :, o : o + d]
        o, f = o + d, f + channels * d


def _to_channels(x: torch.Tensor, dims, channels: int) -> torch.Tensor:
    out = x.new_empty(x.shape[0], channels, sum(dims))
    for src, dst in _block_pairs(x, out, dims, channels):
        dst.copy_(src)
    return out


def _from_channels(y: torch.Tensor, dims, channels: int) -> torch.Tensor:
    out = y.new_empty(y.shape[0], channels * sum(dims))
    for dst, src in _block_pairs(out, y, dims, channels):
        dst.copy_(src)
    return out


class _Relayout(torch.autograd.Function):
    """Multiplicity-major <-> channel layout in one copy (``to_channels`` picks the way);
    the backward is the other way, one copy too (autograd's own backward of split + view +
    cat copies twice), so derivatives of any order work."""

    @staticmethod
    def forward(ctx, x, dims, channels, to_channels):
        ctx.dims, ctx.channels, ctx.to_channels = dims, channels, to_channels
        return (_to_channels if to_channels else _from_channels)(x, dims, channels)

    @staticmethod
    def backward(ctx, g):
        return _Relayout.apply(g, ctx.dims, ctx.channels, not ctx.to_channels), None, None, None


def channel_layout(x: torch.Tensor, irs: Sequence[o3.Irrep], channels: int) -> torch.Tensor:
    """Multiplicity-major ``[N, C*d]`` -> channel layout ``[N, C, d]`` (one copy, also in
    the backward; a copy per irrep block is several times faster than an advanced-index
    gather on CPU)."""
    n = x.shape[0]
    if len(irs) == 1:
        return x.view(n, channels, irs[0].dim)
    return _Relayout.apply(x, tuple(ir.dim for ir in irs), channels, True)


def from_channels(y, irs: Sequence[o3.Irrep]) -> torch.Tensor:
    """Inverse of the channel layout: ``[N, C, d]`` (or a list of per-irrep blocks
    ``[N, C, 2l+1]``) -> multiplicity-major ``[N, C*d]``.

    A tensor goes in one copy (and its gradient back in one). A list is concatenated:
    ``split`` rather than slicing upstream keeps autograd's backward one concatenation,
    not one zero-filled full-size gradient per block.
    """
    if isinstance(y, torch.Tensor):
        n = y.shape[0]
        if len(irs) == 1:
            return y.reshape(n, -1)
        return _Relayout.apply(y, tuple(ir.dim for ir in irs), y.shape[1], False)
    blocks = list(y)
    n = blocks[0].shape[0]
    flat = [b.reshape(n, -1) for b in blocks]
    return torch.cat(flat, dim=1) if len(flat) > 1 else flat[0].contiguous()
