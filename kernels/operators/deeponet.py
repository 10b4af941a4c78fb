"""DeepONet: operator learning with a branch net and a trunk net.

Lu, Jin, Pang, Zhang, Karniadakis, "Learning nonlinear operators via DeepONet
based on the universal approximation theorem of operators", Nature Machine
Intelligence 3, 218-229 (2021).

``G(u)(y) = sum_k b_k(u(x_1), ..., u(x_m)) * t_k(y) + b_0`` where the branch net
``b`` sees the input function at ``m`` fixed sensors and the trunk net ``t``
sees the query location ``y``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["DeepONet", "mlp"]


def mlp(
    sizes: Sequence[int],
    *,
    activation: type[nn.Module] = nn.Tanh,
    activate_last: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> nn.Sequential:
    """Fully connected net ``sizes[0] -> ... -> sizes[-1]``, ``activation`` between layers.

    ``activate_last=True`` also applies it after the last layer (Lu et al. do so
    for the trunk net, so that its outputs are basis-function values).
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, dtype=dtype, device=device))
        if i < len(sizes) - 2 or activate_last:
            layers.append(activation())
    return nn.Sequential(*layers)


class DeepONet(nn.Module):
    """Unstacked DeepONet ``G(u)(y) = <branch(u), trunk(y)> + b_0``.

    Args:
        branch: maps sensor values ``(B, m)`` to ``(B, p)``.
        trunk: maps query points ``(P, d_y)`` to ``(P, p)``, or ``(B, P, d_y)`` to ``(B, P, p)``.
        bias: learn the scalar ``b_0`` (Lu et al. Eq. 2).

    ``forward(u, y)``: ``u`` ``(B, m)``; ``y`` ``(P, d_y)`` (the same query points
    for every input) or ``(B, P, d_y)`` (per-input points).  Returns ``(B, P)``.
    """

    def __init__(
        self,
        branch: nn.Module,
        trunk: nn.Module,
        *,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.branch = branch
        self.trunk = trunk
        self.bias = nn.Parameter(torch.zeros((), dtype=dtype, device=device)) if bias else None

    def forward(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b = self.branch(u)
        t = self.trunk(y)
        if b.shape[-1] != t.shape[-1]:
            raise ValueError(f"branch gives p={b.shape[-1]} features but trunk gives p={t.shape[-1]}")
        out = torch.einsum("bp,qp->bq", b, t) if t.dim() == 2 else torch.einsum("bp,bqp->bq", b, t)
        if self.bias is not None:
            out = out + self.bias
        return out
