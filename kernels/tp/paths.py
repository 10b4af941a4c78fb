"""Which paths a tensor product has and the coefficient of each (e3nn conventions).

A path couples input irrep ``i1`` (degree l1) and ``i2`` (l2) into output irrep
``i3`` (l3). It is allowed when |l1-l2| <= l3 <= l1+l2 and p1*p2 == p3.
Coefficient (e3nn ``irrep_normalization="component"``, ``path_normalization="element"``):

    sqrt((2 l3 + 1) / n_paths(i3)) * wigner_3j(l1, l2, l3)

where ``n_paths(i3)`` counts the paths into output ``i3`` (the fan-in for modes
``uvu`` with one channel in ``x2`` and ``uuu``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from e3nn import o3

__all__ = ["CGPath", "enumerate_paths", "wigner_3j"]


@functools.lru_cache(maxsize=None)
def wigner_3j(l1: int, l2: int, l3: int) -> np.ndarray:
    """Real-basis Wigner 3j tensor ``[2l1+1, 2l2+1, 2l3+1]`` (Frobenius norm 1) in float64, e3nn basis."""
    w = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    return w.numpy().copy()


@dataclass(frozen=True)
class CGPath:
    """One coupling path ``in1[i1] x in2[i2] -> out[i3]`` of degrees ``l1 x l2 -> l3``;
    ``coeff`` is its normalised Clebsch–Gordan tensor (``norm`` times the Wigner 3j, float64)."""

    i1: int
    i2: int
    i3: int
    l1: int
    l2: int
    l3: int
    norm: float

    @property
    def coeff(self) -> np.ndarray:
        return self.norm * wigner_3j(self.l1, self.l2, self.l3)


def allowed(ir1: o3.Irrep, ir2: o3.Irrep, ir3: o3.Irrep, *, gaunt: bool = False) -> bool:
    """Parity and triangle selection rule; ``gaunt=True`` also drops odd l1+l2+l3."""
    if ir1.p * ir2.p != ir3.p:
        return False
    if not abs(ir1.l - ir2.l) <= ir3.l <= ir1.l + ir2.l:
        return False
    if gaunt and (ir1.l + ir2.l + ir3.l) % 2 == 1:
        return False
    return True


def enumerate_paths(
    irs1: Sequence[o3.Irrep], irs2: Sequence[o3.Irrep], irs3: Sequence[o3.Irrep], *, gaunt: bool = False
) -> list[CGPath]:
    """All allowed paths in the order ``for i1: for i2: for i3`` (the weight layout of ``cg``)."""
    raw = [
        (i1, i2, i3)
        for i1, a in enumerate(irs1)
        for i2, b in enumerate(irs2)
        for i3, c in enumerate(irs3)
        if allowed(a, b, c, gaunt=gaunt)
    ]
    fan_in = [0] * len(irs3)
    for _, _, i3 in raw:
        fan_in[i3] += 1
    return [
        CGPath(i1, i2, i3, irs1[i1].l, irs2[i2].l, irs3[i3].l, float(np.sqrt(irs3[i3].dim / fan_in[i3])))
        for i1, i2, i3 in raw
    ]


def unreachable_outputs(paths: Sequence[CGPath], irs3: Sequence[o3.Irrep]) -> list[o3.Irrep]:
    """Output irreps that no path produces."""
    hit = {p.i3 for p in paths}
    return [ir for i, ir in enumerate(irs3) if i not in hit]
