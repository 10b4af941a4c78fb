"""``cg`` backend: Clebsch–Gordan tensor product, numerically identical to e3nn.

Every parity-allowed path ``(i1, i2, i3)`` has a free weight per channel. The weight
layout is e3nn's for the instructions ``[(i1, i2, i3, "uvu" | "uuu", True) ...]`` in the
order of :func:`mlip.kernels.tp.paths.enumerate_paths`: ``weight.view(N, P, C)``.

Execution (why it is faster than e3nn's per-path code on CPU; timings against e3nn and the
other backends, and how to reproduce them, are in ``benchmarks/README.md``):

* pairwise route (elementwise, and channelwise at small L): inputs are turned
  component-major (``[2l+1, N*C]``, the long axis contiguous), and per pair of input
  irreps one :class:`_Bilinear` (outer product + one GEMM with all CG tensors of the pair)
  gives every path of the pair; the weights multiply rows, outputs are sums of rows. Its
  backward is the same bilinear primitive with permuted CG slots (no broadcast-reduce).
* per-sample route (channelwise at larger L): the edge input ``x2`` has one channel, so its
  contraction with the CG tensors, ``M_p[n, i, k] = sum_j x2[n, j] CG_p[i, j, k]``, is done
  once per sample and not per channel; the weights are folded into ``x1`` and each output
  irrep is one batched matmul over all its paths (width padded past torch's slow
  small-matrix path, see :func:`_bmm_width`). Chosen when the pairwise route would need
  over 5x its multiply-adds.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mlip.errors import ConfigError, KernelInputError

from ..irreps import from_channels
from .base import TPBackend, TPSpec
from .paths import enumerate_paths, unreachable_outputs

__all__ = ["CGBackend"]


def _bmm_width(r: int, k: int) -> int:
    """Output width to give a batched ``[C, r] @ [r, k]`` product: ``k`` padded with zero
    columns until ``r * k >= 16`` (and ``k >= 2``). On CPU, torch's bmm takes a slow
    small-matrix path below that size (e.g. ``r = k = 3`` takes longer than ``r = 3, k = 5``),
    in the forward and in both backward products."""
    kp = max(k, 2)
    while r * kp < 16:
        kp += 1
    return kp


_SLOTS = ((0, 1, 2), (2, 1, 0), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1))


def _is_scaled_identity(m: np.ndarray) -> bool:
    """Is the square matrix ``m`` a multiple of the identity (to 1e-15)?"""
    return bool(np.allclose(m, m[0, 0] * np.eye(m.shape[0]), rtol=0, atol=1e-15))


def _scaled_product(c: float, ops: list) -> torch.Tensor:
    """``c * ops[0] * ops[1] * ...`` of broadcastable 3-D tensors, with the fewest full-size
    passes: ``c`` goes on the smallest operand, then the pair with the smallest product is
    multiplied first (e.g. ``[1, N, C] * [N, C]`` before the ``[3, N, 1]`` harmonics)."""
    ops = list(ops)
    smallest = min(range(len(ops)), key=lambda i: ops[i].numel())
    if c != 1.0:
        ops[smallest] = ops[smallest] * c
    while len(ops) > 1:
        i, j = min(((i, j) for i in range(len(ops)) for j in range(i + 1, len(ops))),
                   key=lambda ij: math.prod(max(u, v) for u, v in zip(ops[ij[0]].shape, ops[ij[1]].shape)))
        t = ops[i] * ops[j]
        ops = [o for k, o in enumerate(ops) if k not in (i, j)] + [t]
    return ops[0]


def _outer_mm(xa: torch.Tensor, xb: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    """``[a, N, Ca], [b, N, Cb], [c, a*b] -> [c, N, C]``: outer product over the first axis
    (``Ca`` or ``Cb`` may be 1: broadcast over channels), then one GEMM.

    Component-major (the few components first, samples x channels contiguous), so the
    broadcast product vectorises over ``N * C`` instead of over a dimension of 1-13.
    """
    a, b = xa.shape[0], xb.shape[0]
    n, c = xa.shape[1], max(xa.shape[2], xb.shape[2])
    outer = xa * xb if a == 1 or b == 1 else xa.unsqueeze(1) * xb.unsqueeze(0)
    return (mat @ outer.reshape(a * b, n * c)).view(-1, n, c)


class _Bilinear(torch.autograd.Function):
    """Bilinear form over the first axis ``y[k, r, c] = sum_ij xa[i, r, c] xb[j, r, c] T[i, j, k]``
    (one of ``xa``, ``xb`` may have a single channel, broadcast).

    ``mats[(u, v, o)]`` is ``T`` with its slots permuted to ``(u, v, o)`` and flattened to
    ``[d_o, d_u * d_v]``; ``slots`` says which slots the two inputs and the output fill.
    Both input gradients are the same bilinear form with the slots permuted (summed over
    channels for a broadcast input), so backward is two more calls of this Function: no
    saved outer product, and any order of derivatives (forces in training need the second).
    """

    @staticmethod
    def forward(ctx, xa, xb, mats, slots):
        ctx.save_for_backward(xa, xb)
        ctx.mats, ctx.slots = mats, slots
        return _outer_mm(xa, xb, mats[slots])

    @staticmethod
    def backward(ctx, gy):
        xa, xb = ctx.saved_tensors
        u, v, o = ctx.slots
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = _Bilinear.apply(gy, xb, ctx.mats, (o, v, u))
            if xa.shape[2] != ga.shape[2]:
                ga = ga.sum(2, keepdim=True)
        if ctx.needs_input_grad[1]:
            gb = _Bilinear.apply(xa, gy, ctx.mats, (u, o, v))
            if xb.shape[2] != gb.shape[2]:
                gb = gb.sum(2, keepdim=True)
        return ga, gb, None, None


class CGBackend(TPBackend):
    """Clebsch–Gordan TP; ``weight_numel = n_paths * C``. See module docstring."""

    name = "cg"
    engines = ("torch", "cuequivariance")

    def __init__(self, spec: TPSpec, route: str = "auto"):
        """``route`` (channelwise only): ``"auto"``, ``"pairwise"`` or ``"per_sample"``; both give the
        same numbers, ``auto`` picks by the flop rule of the module docstring."""
        super().__init__(spec)
        if route not in ("auto", "pairwise", "per_sample"):
            raise ConfigError(f"cg: option route must be 'auto', 'pairwise' or 'per_sample', got {route!r}")
        if route == "per_sample" and spec.mode == "elementwise":
            raise ConfigError("cg: option route='per_sample' needs mode='channelwise' (x2 with one channel)")
        self.paths = enumerate_paths(spec.irs1, spec.irs2, spec.irs3)
        missing = unreachable_outputs(self.paths, spec.irs3)
        if missing:
            raise KernelInputError(
                f"irreps_out: no path of {spec.irreps_in1} x {spec.irreps_in2} produces {missing}"
            )
        self.weight_numel = len(self.paths) * spec.channels
        off1 = np.cumsum([0] + [ir.dim for ir in spec.irs1])
        off2 = np.cumsum([0] + [ir.dim for ir in spec.irs2])
        # channelwise: per-sample matrices + bmm (fewest flops, grows best with L) unless the
        # pairwise outer-product route (elementwise's, x2 broadcast over channels) is within
        # 5x its flops: below that, large GEMMs beat many tiny per-sample matmuls on CPU
        # (the factor 5 puts the switch where the timings of benchmarks/README.md cross).
        if route == "auto":
            self.use_pairs = spec.mode == "elementwise" or self._pair_flops() <= 5 * self._bmm_flops()
        else:
            self.use_pairs = route == "pairwise"
        # the pairwise route works on component-major blocks [2l+1, N, C] per irrep (see
        # mlip.kernels.tp.layout), so it also runs on stacked rows (forward_rows)
        self.supports_rows = self.use_pairs
        if self.use_pairs:
            self._build_elementwise(off1, off2)
        else:
            self._build_channelwise(off1, off2)

    def engine_executor(self, name: str):
        """``cuequivariance``: :class:`~mlip.kernels.tp.cueq.CGExecutor` (same paths, weights
        and coefficients as this backend)."""
        if name != "cuequivariance":
            return super().engine_executor(name)
        from .cueq import CGExecutor

        return CGExecutor(self)

    def floats_per_sample(self) -> int:
        s = self.spec
        if self.use_pairs:
            widest = max(s.irs1[i1].dim * s.irs2[i2].dim for _, _, i1, i2, _ in self.pairs)
        else:
            widest = max(r for _, _, r, _, _, _ in self.outputs)
        return s.channels * max(widest, s.d1, s.d3)

    def _pair_flops(self) -> int:
        """Multiply-adds per (sample, channel) of the pairwise route."""
        d1, d2 = self.spec.irs1, self.spec.irs2
        pairs: dict = {}
        for p in self.paths:
            pairs[(p.i1, p.i2)] = pairs.get((p.i1, p.i2), 1) + 2 * p.l3 + 1
        return sum(d1[i1].dim * d2[i2].dim * k for (i1, i2), k in pairs.items())

    def _bmm_flops(self) -> int:
        """Multiply-adds per (sample, channel) of the per-sample-matrix route."""
        rows: dict = {}
        for p in self.paths:
            rows[p.i3] = rows.get(p.i3, 0) + self.spec.irs1[p.i1].dim
        return sum(r * _bmm_width(r, self.spec.irs3[i3].dim) for i3, r in rows.items())

    def instructions(self) -> list[tuple]:
        """The equivalent e3nn ``o3.TensorProduct`` instructions (same weight layout)."""
        mode = "uvu" if self.spec.mode == "channelwise" else "uuu"
        return [(p.i1, p.i2, p.i3, mode, True) for p in self.paths]

    # -- channelwise -------------------------------------------------------------------
    def _build_channelwise(self, off1, off2) -> None:
        s = self.spec
        d2 = s.d2
        # One bmm per output irrep i3 over all its paths: rows (q, i) for each input irrep i1
        # with paths (i1, *, i3), q runs over those paths (they differ only in i2).
        self.outputs = []  # (i3, [(i1, nq)], R, K, padded K, const name)
        order = []
        for i3, ir3 in enumerate(s.irs3):
            parts, blocks = [], []
            for i1, ir1 in enumerate(s.irs1):
                ks = [k for k, p in enumerate(self.paths) if p.i1 == i1 and p.i3 == i3]
                if not ks:
                    continue
                a = ir1.dim
                g = np.zeros((d2, len(ks), a, ir3.dim))
                for q, k in enumerate(ks):
                    p = self.paths[k]
                    g[off2[p.i2] : off2[p.i2 + 1], q] = p.coeff.transpose(1, 0, 2)
                blocks.append(g.reshape(d2, len(ks) * a, ir3.dim))
                parts.append((i1, len(ks)))
                order += ks
            r, k = sum(b.shape[1] for b in blocks), ir3.dim
            kp = _bmm_width(r, k)
            g = np.zeros((d2, r, kp))
            g[:, :, :k] = np.concatenate(blocks, axis=1)
            name = f"g_{i3}"
            self.add_const(name, g.reshape(d2, -1))
            self.outputs.append((i3, parts, r, k, kp, name))
        # weights reordered once so that each output's paths are contiguous (one gather, then views)
        self.add_const("order", torch.tensor(order, dtype=torch.long))

    def _forward_channelwise(self, x1, x2, w):
        s = self.spec
        n, C = x1.shape[0], s.channels
        blocks = x1.split([C * ir.dim for ir in s.irs1], dim=1)
        wv = w.view(w.shape[0], len(self.paths), C).index_select(1, self.const("order", x1))
        wparts = wv.transpose(1, 2).split([nq for o in self.outputs for _, nq in o[1]], dim=2)  # [N|1, C, nq]
        outs: list = [None] * len(s.irs3)
        j = 0
        for i3, parts, r, k, kp, name in self.outputs:
            xs = []
            for i1, nq in parts:
                a = s.irs1[i1].dim
                xs.append((blocks[i1].view(n, C, 1, a) * wparts[j].unsqueeze(-1)).reshape(n, C, nq * a))
                j += 1
            xw = xs[0] if len(xs) == 1 else torch.cat(xs, dim=2)
            # M[n, (q, i), k] = sum_j x2[n, j] CG_q[i, j, k]: once per sample, not per channel
            m = (x2 @ self.const(name, x2)).view(n, r, kp)
            y = torch.bmm(xw, m)
            outs[i3] = y if kp == k else y[:, :, :k]
        return from_channels(outs, s.irs3)

    # -- elementwise -------------------------------------------------------------------
    def _build_elementwise(self, off1, off2) -> None:
        s = self.spec
        # per pair of input irreps (i1, i2): ("scale", c) when one input is a scalar (CG =
        # c * identity, one path: a broadcast multiply), ("dot", c) when the pair's one path
        # is l x l -> 0 (CG = c * identity matrix: a sum of products of matching rows), else
        # the const prefix of a bilinear form over all the pair's paths
        self.pairs = []  # (kind, c or const prefix, i1, i2, [(path k, i3, width)])
        for i1 in range(len(s.irs1)):
            for i2 in range(len(s.irs2)):
                ps = [(k, p) for k, p in enumerate(self.paths) if p.i1 == i1 and p.i2 == i2]
                if not ps:
                    continue
                entries = [(k, p.i3, 2 * p.l3 + 1) for k, p in ps]
                t = np.concatenate([p.coeff for _, p in ps], axis=2)  # [a, b, sum of 2l3+1]
                flat = t.reshape(-1, t.shape[2])
                if min(t.shape[:2]) == 1 and flat.shape[0] == flat.shape[1] and _is_scaled_identity(flat):
                    self.pairs.append(("scale", float(flat[0, 0]), i1, i2, entries))
                    continue
                if t.shape[2] == 1 and t.shape[0] == t.shape[1] and _is_scaled_identity(t[:, :, 0]):
                    self.pairs.append(("dot", float(t[0, 0, 0]), i1, i2, entries))
                    continue
                name = f"cg_{i1}_{i2}"
                for perm in _SLOTS:
                    u, v, o = perm
                    tp = t.transpose(u, v, o)
                    self.add_const(f"{name}_{u}{v}{o}", tp.reshape(tp.shape[0] * tp.shape[1], tp.shape[2]).T)
                self.pairs.append(("bilinear", name, i1, i2, entries))

    def _pair_blocks(self, t1, t2, w) -> list:
        """Both inputs as component-major blocks ``[2l+1, N, C]`` (``x2`` with one channel in
        channelwise mode): per pair of input irreps a broadcast product (one scalar input),
        a row-wise dot product (``l x l -> 0``) or one :class:`_Bilinear` over all the pair's
        paths, times the weights; returns the ``[2l+1, N, C]`` block of each output irrep."""
        s = self.spec
        C = s.channels
        wp = w.view(w.shape[0], len(self.paths), C).unbind(1)  # [N|1, C] each, broadcast over rows
        outs: list = [None] * len(s.irs3)
        for kind, c, i1, i2, entries in self.pairs:
            if kind == "bilinear":
                mats = {perm: self.const(f"{c}_{perm[0]}{perm[1]}{perm[2]}", w) for perm in _SLOTS}
                y = _Bilinear.apply(t1[i1], t2[i2], mats, (0, 1, 2))  # [sum of 2l3+1, N, C]
                terms = [(i3, yk * wp[k]) for (k, i3, _), yk in zip(entries, y.split([e[2] for e in entries], dim=0))]
            else:
                ((k, i3, _),) = entries
                if kind == "scale":  # c * x1 * x2 * w
                    t = _scaled_product(c, [t1[i1], t2[i2], wp[k].unsqueeze(0)])
                else:  # c * sum_m x1[m] x2[m] * w
                    a, b, wk = t1[i1], t2[i2], wp[k].unsqueeze(0)
                    smallest = min((a, b, wk), key=torch.Tensor.numel)
                    a, b, wk = (u * c if u is smallest else u for u in (a, b, wk))
                    t = (a * b).sum(0, keepdim=True) * wk
                terms = [(i3, t)]
            for i3, t in terms:
                outs[i3] = t if outs[i3] is None else outs[i3] + t
        return outs

    def forward_rows(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if not self.use_pairs:
            raise RuntimeError("cg: forward_rows needs the pairwise route")
        n, C = x1.shape[1], self.spec.channels
        outs = self._pair_blocks(x1.split(self.plan1.dims, dim=0), x2.split(self.plan2.dims, dim=0), weight)
        outs = [b.expand(d, n, C) for b, d in zip(outs, self.plan3.dims)]
        return torch.cat(outs, dim=0) if len(outs) > 1 else outs[0].contiguous()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.use_pairs:
            return self.plan3.from_rows(self._pair_blocks(self.plan1.to_rows(x1), self.plan2.to_rows(x2), weight))
        return self._forward_channelwise(x1, x2, weight)
