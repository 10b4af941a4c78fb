"""Shared machinery of the ``gaunt`` and ``grid`` backends: tensor products computed as the
pointwise product of two functions on the sphere, projected back onto harmonics.

Weights (per sample or shared), layout ``weight.view(N, n1 + n2 + n3, C)``: one weight per
(input-1 irrep, channel), per (input-2 irrep, channel) and per (output irrep, channel):

    out_c = w3[c, l3] * P_{l3}[ (sum_l1 w1[c, l1] x1_c,l1) * (sum_l2 w2[c, l2] x2_(c),l2) ]

where P projects onto degree l3 (see :mod:`mlip.kernels.sphere` for the basis). When one
input is a single degree-0 irrep (a constant function), only the product of the three weights
of a path matters, so the layout is ``weight.view(N, n3, C)``: one weight per (output irrep,
channel), as many as ``cg`` has paths. Every
path of this product is a Gaunt coefficient: paths with l1 + l2 + l3 odd do not exist
(the product of functions is symmetric), so e.g. the cross product 1o x 1o -> 1e is
absent. On natural-parity irreps (0e, 1o, 2e, 3o, ...) parity already forbids exactly
those paths, so nothing parity allows is lost; only the freedom of one weight per path.

Irreps of unnatural parity (0o, 1e, ...) are handled by splitting each input into its
natural and pseudo parts (the parity class ``p * (-1)^l``); classes multiply like signs,
so up to four function products are formed. Within one class, degrees must be distinct.
"""

from __future__ import annotations

import numpy as np
import torch

from mlip.errors import KernelInputError

from ..irreps import from_channels
from .base import TPBackend, TPSpec
from .paths import enumerate_paths, unreachable_outputs

__all__ = ["SphericalProductBackend"]


def parity_class(ir) -> int:
    return ir.p * (-1) ** ir.l


class SphericalProductBackend(TPBackend):
    """Base for backends that multiply functions on the sphere. Subclasses implement
    ``_build_transforms()``, ``_to_values(xw, side, cls)`` and ``_from_values(h, cls)``."""

    def __init__(self, spec: TPSpec):
        super().__init__(spec)
        for name, irs in (("irreps_in1", spec.irs1), ("irreps_in2", spec.irs2), ("irreps_out", spec.irs3)):
            seen = set()
            for ir in irs:
                key = (ir.l, parity_class(ir))
                if key in seen:
                    raise KernelInputError(
                        f"{name}: backend {self.name!r} needs distinct degrees per parity class; "
                        f"degree {ir.l} appears twice in {[str(i) for i in irs]}"
                    )
                seen.add(key)
        self.paths = enumerate_paths(spec.irs1, spec.irs2, spec.irs3, gaunt=True)
        missing = unreachable_outputs(self.paths, spec.irs3)
        if missing:
            raise KernelInputError(
                f"irreps_out: no Gaunt path of {spec.irreps_in1} x {spec.irreps_in2} produces {missing} "
                "(Gaunt products have no paths with l1+l2+l3 odd)"
            )
        n1, n2, n3 = len(spec.irs1), len(spec.irs2), len(spec.irs3)
        self.weight_numel = spec.channels * (n1 + n2 + n3)
        self.L1 = max(ir.l for ir in spec.irs1)
        self.L2 = max(ir.l for ir in spec.irs2)
        self.L3 = max(ir.l for ir in spec.irs3)
        # class pairs (s1, s2) that produce some output
        cls = lambda irs: {parity_class(ir) for ir in irs}  # noqa: E731
        self.class_pairs = [
            (a, b) for a in sorted(cls(spec.irs1)) for b in sorted(cls(spec.irs2)) if a * b in cls(spec.irs3)
        ]
        # 0/1 matrices expanding per-irrep weights to components (a matmul is far faster
        # than an index_select along a strided last dimension)
        for side, irs in (("1", spec.irs1), ("2", spec.irs2), ("3", spec.irs3)):
            S = np.zeros((len(irs), sum(ir.dim for ir in irs)))
            o = 0
            for i, ir in enumerate(irs):
                S[i, o : o + ir.dim] = 1.0
                o += ir.dim
            self.add_const(f"S{side}", S)
            for s in (1, -1):
                mask = np.concatenate([np.full(ir.dim, parity_class(ir) == s, dtype=float) for ir in irs])
                self.add_const(f"mask{side}_{s}", mask)
        # a scalar input (one irrep of degree 0) makes the product trivial: the constant times
        # the other function, i.e. each output block is one block of the other input, scaled
        self.scalar_side = None
        for side, irs in ((1, spec.irs1), (2, spec.irs2)):
            if self.scalar_side is None and len(irs) == 1 and irs[0].l == 0:
                self.scalar_side = side
        if self.scalar_side is not None:
            self.weight_numel = spec.channels * n3
            cs = parity_class((spec.irs1 if self.scalar_side == 1 else spec.irs2)[0])
            other = spec.irs2 if self.scalar_side == 1 else spec.irs1
            self.scalar_plan = [
                next(i for i, ir in enumerate(other) if ir.l == ir3.l and cs * parity_class(ir) == parity_class(ir3))
                for ir3 in spec.irs3
            ]
        self._build_transforms()

    def _build_transforms(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _to_values(self, xw: torch.Tensor, side: str) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _from_values(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _values2(self, x2: torch.Tensor, w2: torch.Tensor, mask) -> torch.Tensor:
        """Grid values ``[N*C, P]`` of the channel-weighted second input. Subclasses may
        override for the channelwise case (one channel of x2, weights per channel)."""
        x2w = x2 * (w2 @ self.const("S2", x2))
        if mask is not None:
            x2w = x2w * mask
        n, C = w2.shape[0] if w2.shape[0] > x2.shape[0] else x2.shape[0], self.spec.channels
        x2w = x2w.expand(n, C, -1)
        return self._to_values(x2w.reshape(n * C, -1), "2")

    def _forward_scalar_rows(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Product with a constant function (one input of degree 0), exactly and without
        transforms, on stacked component-major rows (``[D, N, C]``, see
        :meth:`TPBackend.forward_rows`): ``out_l3 = w[l3] * x_s * x_o,l3`` (``s``: the scalar
        input, ``o``: the other; the degree-l3 block of ``o`` with the matching parity class)."""
        s = self.spec
        C = s.channels
        w = weight.view(weight.shape[0], -1, C)  # [N|1, n3, C]
        if self.scalar_side == 1:
            xs, xo, plan_o = x1[0], x2, self.plan2
        else:
            xs, xo, plan_o = x2[0], x1, self.plan1
        blocks = xo.split(plan_o.dims, dim=0)
        out = [blocks[io] * (xs * w[:, i3]) for i3, io in enumerate(self.scalar_plan)]
        return torch.cat(out, dim=0) if len(out) > 1 else out[0]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.scalar_side is not None:
            y = self._forward_scalar_rows(self.plan1.stack(x1), self.plan2.stack(x2), weight)
            return self.plan3.unstack(y)
        s = self.spec
        n, C = x1.shape[0], s.channels
        n1, n2 = len(s.irs1), len(s.irs2)
        x1c, x2c = self.to_channels(x1, x2)  # [N, C, d1], [N, C|1, d2]
        w = weight.view(weight.shape[0], -1, C).transpose(1, 2)  # [N|1, C, n1+n2+n3]
        w1, w2, w3 = w[:, :, :n1], w[:, :, n1 : n1 + n2], w[:, :, n1 + n2 :]
        x1w = x1c * (w1 @ self.const("S1", x1))
        single = len(self.class_pairs) == 1
        out = None
        for s1, s2 in self.class_pairs:
            a = x1w if single else x1w * self.const(f"mask1_{s1}", x1)
            f2 = self._values2(x2c, w2, None if single else self.const(f"mask2_{s2}", x1))
            f1 = self._to_values(a.reshape(n * C, -1), "1")
            # without autograd, multiply in place: one [N*C, P] buffer less to write and read
            h = f1 * f2 if torch.is_grad_enabled() else f1.mul_(f2)
            y = self._from_values(h).view(n, C, -1)
            if not single:
                y = y * self.const(f"mask3_{s1 * s2}", x1)
            out = y if out is None else out + y
        w3e = w3 @ self.const("S3", x1)
        return from_channels(out * w3e if torch.is_grad_enabled() else out.mul_(w3e), s.irs3)
