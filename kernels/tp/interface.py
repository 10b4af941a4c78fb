"""The one tensor-product interface of mlip, with swappable backends."""

from __future__ import annotations

import torch

from ..irreps import as_irreps, split_channels
from .base import MODES, TPSpec

__all__ = ["TensorProduct", "BACKENDS", "register_backend"]

BACKENDS: dict[str, type] = {}


def register_backend(cls: type) -> type:
    """Class decorator/function adding a backend under ``cls.name``."""
    BACKENDS[cls.name] = cls
    return cls


class TensorProduct(torch.nn.Module):
    """Equivariant tensor product ``out = TP(x1, x2; weight)`` with a swappable backend.

    Args:
        irreps_in1: irreps of ``x1`` with C channels on every irrep, e.g. ``"32x0e+32x1o+32x2e"``.
        irreps_in2: irreps of ``x2``: one channel in ``channelwise`` mode (e.g. edge
            spherical harmonics ``"0e+1o+2e"``), C channels in ``elementwise`` mode.
        irreps_out: output irreps, C channels on every irrep.
        mode: ``"channelwise"`` (e3nn ``uvu``) or ``"elementwise"`` (e3nn ``uuu``).
        backend: ``"cg"`` (exact Clebsch–Gordan, e3nn numbers), ``"gaunt"`` (Gaunt product
            by 2D FFT), ``"grid"`` (Gaunt product on a spherical grid) or ``"cp"`` (CP
            decomposition of the CG tensor). Each backend documents what its weights mean.
        **options: backend options (e.g. ``resolution`` for ``grid``, ``rank`` for ``cp``).

    Shapes: ``x1 [N, irreps_in1.dim]``, ``x2 [N, irreps_in2.dim]``, ``weight [N, weight_numel]``
    (per sample) or ``[weight_numel]`` (shared); returns ``[N, irreps_out.dim]``, in e3nn's
    multiplicity-major layout. ``x1``, ``x2`` and ``weight`` share dtype and device.
    """

    def __init__(self, irreps_in1, irreps_in2, irreps_out, *, mode: str = "channelwise", backend: str = "cg", **options):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown tensor-product backend {backend!r}; known backends: {sorted(BACKENDS)}")
        in1 = as_irreps(irreps_in1, "irreps_in1")
        in2 = as_irreps(irreps_in2, "irreps_in2")
        out = as_irreps(irreps_out, "irreps_out")
        c, irs1 = split_channels(in1, "irreps_in1")
        c2, irs2 = split_channels(in2, "irreps_in2", channels=1 if mode == "channelwise" else c)
        _, irs3 = split_channels(out, "irreps_out", channels=c)
        spec = TPSpec(in1, in2, out, c, tuple(irs1), tuple(irs2), tuple(irs3), mode)
        self.irreps_in1, self.irreps_in2, self.irreps_out = in1, in2, out
        self.mode, self.backend = mode, backend
        self.impl = BACKENDS[backend](spec, **options)
        self.weight_numel = self.impl.weight_numel

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        self._check(x1, x2, weight)
        if x1.shape[0] == 0:
            # no samples (e.g. a structure without edges): an empty result that is still
            # connected to the inputs, so autograd.grad works without allow_unused
            return (x1.sum() + x2.sum() + weight.sum()).mul(0).expand(0, self.irreps_out.dim)
        if weight.dim() == 1:
            weight = weight.unsqueeze(0)
        return self.impl(x1, x2, weight)

    def _check(self, x1, x2, weight) -> None:
        for name, t, dim in (("x1", x1, self.irreps_in1.dim), ("x2", x2, self.irreps_in2.dim)):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != dim:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name}: expected shape [N, {dim}], got {shape}")
        if x1.shape[0] != x2.shape[0]:
            raise ValueError(f"x1 and x2 must have the same N, got {x1.shape[0]} and {x2.shape[0]}")
        n = x1.shape[0]
        if not isinstance(weight, torch.Tensor) or not (
            (weight.dim() == 2 and weight.shape == (n, self.weight_numel))
            or (weight.dim() == 1 and weight.shape[0] == self.weight_numel)
        ):
            got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise ValueError(f"weight: expected shape [{n}, {self.weight_numel}] or [{self.weight_numel}], got {got}")
        if not x1.is_floating_point() or x1.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"x1: expected float32 or float64, got {x1.dtype}")
        for name, t in (("x2", x2), ("weight", weight)):
            if t.dtype != x1.dtype:
                raise ValueError(f"{name}: dtype {t.dtype} differs from x1's {x1.dtype}")
            if t.device != x1.device:
                raise ValueError(f"{name}: device {t.device} differs from x1's {x1.device}")

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"
