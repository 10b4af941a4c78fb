"""``cg`` backend: Clebsch–Gordan tensor product, numerically identical to e3nn.

Every parity-allowed path ``(i1, i2, i3)`` has a free weight per channel. The weight
layout is e3nn's for the instructions ``[(i1, i2, i3, "uvu" | "uuu", True) ...]`` in the
order of :func:`mlip.kernels.tp.paths.enumerate_paths`: ``weight.view(N, P, C)``.

Execution (why it is faster than e3nn's per-path code):

* channelwise: the edge input ``x2`` has one channel, so its contraction with the CG
  tensors, ``M_p[n, i, k] = sum_j x2[n, j] CG_p[i, j, k]``, is done once per sample
  and not per channel. The weights are folded into ``x1`` (one gather + one multiply),
  and each output irrep is then a single batched matmul over all its paths.
* elementwise: per pair of input irreps, the outer product of ``x1`` and ``x2`` blocks
  is contracted with all CG tensors of that pair in one matmul.
"""

from __future__ import annotations

import numpy as np
import torch

from ..irreps import from_channels
from .base import TPBackend, TPSpec
from .paths import enumerate_paths, unreachable_outputs

__all__ = ["CGBackend"]


class CGBackend(TPBackend):
    """Clebsch–Gordan TP; ``weight_numel = n_paths * C``. See module docstring."""

    name = "cg"

    def __init__(self, spec: TPSpec):
        super().__init__(spec)
        self.paths = enumerate_paths(spec.irs1, spec.irs2, spec.irs3)
        missing = unreachable_outputs(self.paths, spec.irs3)
        if missing:
            raise ValueError(
                f"irreps_out: no path of {spec.irreps_in1} x {spec.irreps_in2} produces {missing}"
            )
        self.weight_numel = len(self.paths) * spec.channels
        off1 = np.cumsum([0] + [ir.dim for ir in spec.irs1])
        off2 = np.cumsum([0] + [ir.dim for ir in spec.irs2])
        if spec.mode == "channelwise":
            self._build_channelwise(off1, off2)
        else:
            self._build_elementwise(off1, off2)

    def instructions(self) -> list[tuple]:
        """The equivalent e3nn ``o3.TensorProduct`` instructions (same weight layout)."""
        mode = "uvu" if self.spec.mode == "channelwise" else "uuu"
        return [(p.i1, p.i2, p.i3, mode, True) for p in self.paths]

    # -- channelwise -------------------------------------------------------------------
    def _build_channelwise(self, off1, off2) -> None:
        s = self.spec
        d2 = s.d2
        # One group per (i3, i1): its paths differ only in i2 and share a = 2l1+1, b3 = 2l3+1.
        self.groups = []  # (i1, i3, a, b3, n_q, const name)
        order = []
        for i3, ir3 in enumerate(s.irs3):
            for i1, ir1 in enumerate(s.irs1):
                ks = [k for k, p in enumerate(self.paths) if p.i1 == i1 and p.i3 == i3]
                if not ks:
                    continue
                a, b3 = ir1.dim, ir3.dim
                g = np.zeros((d2, len(ks), a, b3))
                for q, k in enumerate(ks):
                    p = self.paths[k]
                    g[off2[p.i2] : off2[p.i2 + 1], q] = p.coeff.transpose(1, 0, 2)
                name = f"g_{i1}_{i3}"
                self.add_const(name, g.reshape(d2, -1))
                self.groups.append((i1, i3, a, b3, len(ks), name))
                order += ks
        # weights reordered once so that each group's paths are contiguous (one gather, then views)
        self.add_const("order", torch.tensor(order, dtype=torch.long))

    def _forward_channelwise(self, x1, x2, w):
        s = self.spec
        n, C = x1.shape[0], s.channels
        blocks = x1.split([C * ir.dim for ir in s.irs1], dim=1)
        wv = w.view(w.shape[0], len(self.paths), C).index_select(1, self.const("order", x1))
        wgroups = wv.transpose(1, 2).split([g[4] for g in self.groups], dim=2)  # [N|1, C, nq] each
        outs: list = [None] * len(s.irs3)
        for (i1, i3, a, b3, nq, name), wq in zip(self.groups, wgroups):
            # M[n, (q, i), k] = sum_j x2[n, j] CG_q[i, j, k]: once per sample, not per channel
            m = (x2 @ self.const(name, x2)).view(n, nq * a, b3)
            xw = (blocks[i1].view(n, C, 1, a) * wq.unsqueeze(-1)).reshape(n, C, nq * a)
            outs[i3] = torch.bmm(xw, m) if outs[i3] is None else torch.baddbmm(outs[i3], xw, m)
        return from_channels(outs, s.irs3)

    # -- elementwise -------------------------------------------------------------------
    def _build_elementwise(self, off1, off2) -> None:
        s = self.spec
        self.pairs = []  # (const name, i1, i2, a, b, [(path k, i3, width)])
        for i1, ir1 in enumerate(s.irs1):
            for i2, ir2 in enumerate(s.irs2):
                ps = [(k, p) for k, p in enumerate(self.paths) if p.i1 == i1 and p.i2 == i2]
                if not ps:
                    continue
                a, b = ir1.dim, ir2.dim
                cgm = np.concatenate([p.coeff.reshape(a * b, 2 * p.l3 + 1) for _, p in ps], axis=1)
                name = f"cg_{i1}_{i2}"
                self.add_const(name, cgm)
                self.pairs.append((name, i1, i2, a, b, [(k, p.i3, 2 * p.l3 + 1) for k, p in ps]))

    def _forward_elementwise(self, x1, x2, w):
        s = self.spec
        n, C = x1.shape[0], s.channels
        b1 = x1.split([C * ir.dim for ir in s.irs1], dim=1)
        b2 = x2.split([C * ir.dim for ir in s.irs2], dim=1)
        wp = w.view(w.shape[0], len(self.paths), C, 1).unbind(1)
        outs: list = [None] * len(s.irs3)
        for name, i1, i2, a, b, entries in self.pairs:
            outer = b1[i1].view(n, C, a, 1) * b2[i2].view(n, C, 1, b)
            y = outer.view(n, C, a * b) @ self.const(name, x1)  # [N, C, sum of 2l3+1]
            for (k, i3, _), yk in zip(entries, y.split([e[2] for e in entries], dim=2)):
                t = yk * wp[k]
                outs[i3] = t if outs[i3] is None else outs[i3] + t
        return from_channels(outs, s.irs3)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.spec.mode == "channelwise":
            return self._forward_channelwise(x1, x2, weight)
        return self._forward_elementwise(x1, x2, weight)
