"""Quadratic neurons with ReLinear initialisation and training.

Fan et al., "Expressivity and Trainability of Quadratic Networks" (2021).

``y = (W_r x + b_r) * (W_g x + b_g) + W_b (x * x) + c``.  ReLinear starts from
``W_g = 0, b_g = 1, W_b = 0, c = 0`` so the layer *is* the linear layer
``W_r x + b_r`` at initialisation, and trains the quadratic terms with a smaller
learning rate so the network departs from the linear one gradually.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["QuadraticLinear", "quadratic_param_groups"]


class QuadraticLinear(nn.Module):
    """Quadratic layer ``(..., in_features) -> (..., out_features)``.

    Parameters: ``weight_r, bias_r`` (the linear part, ``nn.Linear`` default
    initialisation), ``weight_g, bias_g``, ``weight_b``, ``bias_c`` (quadratic
    terms, ReLinear initialisation ``0, 1, 0, 0``).
    """

    QUADRATIC = ("weight_g", "bias_g", "weight_b", "bias_c")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.in_features, self.out_features = in_features, out_features
        self.weight_r = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.bias_r = nn.Parameter(torch.empty(out_features, **kw))
        self.weight_g = nn.Parameter(torch.zeros(out_features, in_features, **kw))
        self.bias_g = nn.Parameter(torch.ones(out_features, **kw))
        self.weight_b = nn.Parameter(torch.zeros(out_features, in_features, **kw))
        self.bias_c = nn.Parameter(torch.zeros(out_features, **kw))
        # Same law as nn.Linear so a quadratic net starts as the usual linear net.
        nn.init.kaiming_uniform_(self.weight_r, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        nn.init.uniform_(self.bias_r, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin = nn.functional.linear(x, self.weight_r, self.bias_r)
        gate = nn.functional.linear(x, self.weight_g, self.bias_g)
        return lin * gate + nn.functional.linear(x * x, self.weight_b, self.bias_c)

    def param_groups(self, lr: float, quad_lr_scale: float) -> list[dict]:
        """Optimizer groups: linear part at ``lr``, quadratic terms at ``lr * quad_lr_scale``."""
        return quadratic_param_groups(self, lr, quad_lr_scale)


def quadratic_param_groups(module: nn.Module, lr: float, quad_lr_scale: float) -> list[dict]:
    """Split ``module``'s parameters for ReLinear training.

    Returns ``[{"params": [...], "lr": lr}, {"params": [...], "lr": lr * quad_lr_scale}]``:
    the second group holds ``weight_g, bias_g, weight_b, bias_c`` of every
    :class:`QuadraticLinear` inside ``module``; everything else is in the first.
    Pass it straight to a ``torch.optim`` optimizer.
    """
    quad_ids = {
        id(getattr(m, name)) for m in module.modules() if isinstance(m, QuadraticLinear) for name in m.QUADRATIC
    }
    base = [p for p in module.parameters() if id(p) not in quad_ids]
    quad = [p for p in module.parameters() if id(p) in quad_ids]
    return [{"params": base, "lr": lr}, {"params": quad, "lr": lr * quad_lr_scale}]
