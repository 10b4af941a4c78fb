"""Delta activations: transmit only the change of a quantised activation.

Neil, Lee, Delbruck, Liu, "Delta Networks for Optimized Recurrent Network
Computation", ICML 2017.

For a sequence ``x_0, x_1, ...`` the layer emits ``Delta_t = Q(x_t) - Q(x_{t-1})``
(``Q(x_{-1}) = 0``) with ``Q`` a fixed-point quantiser.  Slowly varying inputs
give sparse deltas, and a linear consumer can accumulate
``W x_t = sum_{s <= t} W Delta_s`` while only touching the non-zero columns.
An L1 penalty on ``Delta`` (the paper's sparsity cost) encourages this.  With a
threshold ``theta > 0`` a unit only fires when its quantised value moved by more
than ``theta`` from the last *transmitted* value, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DeltaActivation", "fixed_point_quantize", "delta_accumulate"]


def fixed_point_quantize(x: torch.Tensor, frac_bits: int) -> torch.Tensor:
    """Round to the grid ``2**-frac_bits`` with a straight-through gradient (any shape)."""
    scale = 2.0**frac_bits
    q = torch.round(x * scale) / scale
    return x + (q - x).detach()


def delta_accumulate(deltas: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Downstream accumulation ``y_t = sum_{s <= t} W Delta_s``.

    ``deltas``: ``(T, ..., D)``; ``weight``: ``(D_out, D)`` or ``None`` (identity).
    Returns ``(T, ..., D_out)``.  For a linear ``W`` this equals ``W Q(x_t)``.
    """
    y = deltas if weight is None else deltas @ weight.T
    return torch.cumsum(y, dim=0)


class DeltaActivation(nn.Module):
    """Delta encoder over time: ``x`` ``(T, ...) -> (deltas (T, ...), l1_penalty ())``.

    Args:
        frac_bits: fractional bits of the fixed-point quantiser ``Q``.
        threshold: ``theta``; ``0`` gives exactly ``Q(x_t) - Q(x_{t-1})``.

    The penalty is ``mean |Delta|`` over every element of ``deltas`` (frame 0
    included, as the first transmission also costs).  Gradients pass through
    ``Q`` straight-through.
    """

    def __init__(self, frac_bits: int = 8, *, threshold: float = 0.0) -> None:
        super().__init__()
        self.frac_bits = frac_bits
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = fixed_point_quantize(x, self.frac_bits)
        if self.threshold == 0.0:
            prev = torch.cat([torch.zeros_like(q[:1]), q[:-1]], dim=0)
            deltas = q - prev
        else:
            # The reference is the last *transmitted* value, so drift below the
            # threshold still fires once it accumulates.
            out = []
            ref = torch.zeros_like(q[0])
            for t in range(q.shape[0]):
                d = q[t] - ref
                d = torch.where(d.abs() > self.threshold, d, torch.zeros_like(d))
                ref = ref + d
                out.append(d)
            deltas = torch.stack(out)
        return deltas, deltas.abs().mean()
