"""Learned proximal networks: exact proximal operators as gradients of convex potentials.

Fang, Buchanan, Sulam, "What's in a Prior? Learned Proximal Networks for
Inverse Problems", ICLR 2024.

``f(y) = grad psi(y)`` with ``psi(y) = ICNN(y) + alpha ||y||^2``.  The ICNN
(input-convex neural network, Amos, Xu, Kolter 2017)
``z_1 = g(H_1 y + b_1)``, ``z_{k+1} = g(W_k z_k + H_{k+1} y + b_{k+1})``,
``ICNN(y) = w^T z_K`` is convex in ``y`` when every ``W_k`` and ``w`` is
non-negative and ``g`` is convex and non-decreasing.  By Gribonval and
Nikolova (2020) the gradient of a convex function is the proximal operator of
some (possibly non-convex) regulariser, so ``f`` is an exact prox; ``alpha > 0``
makes ``psi`` strongly convex and ``f`` strongly monotone (invertible).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LearnedProximalNetwork"]


class LearnedProximalNetwork(nn.Module):
    """``f(y) = grad_y [ICNN(y) + alpha ||y||^2]``: ``(B, dim) -> (B, dim)``.

    Args:
        dim: input dimension.
        hidden: width of each ICNN layer.
        depth: number of ICNN layers ``K``.
        alpha: weight of the quadratic term (``>= 0``).
        beta: sharpness of the softplus activation ``g(t) = softplus(beta t) / beta``
            (convex, non-decreasing, smooth so ``f`` is continuous).

    Non-negativity of ``W_k`` and ``w`` is enforced by clamping in the forward
    pass, so every parameter setting gives a convex ``psi``.
    :meth:`potential` returns ``psi`` of shape ``(B,)``.  ``forward`` builds a
    graph through the gradient (``create_graph``) so ``f`` can be trained.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        depth: int = 3,
        *,
        alpha: float = 0.0,
        beta: float = 10.0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        kw = dict(dtype=dtype, device=device)
        self.dim, self.alpha, self.beta = dim, alpha, beta
        self.input_layers = nn.ModuleList(nn.Linear(dim, hidden, **kw) for _ in range(depth))
        self.hidden_weights = nn.ParameterList(
            # Non-negative start with the fan-in scale of a uniform init.
            nn.Parameter(torch.rand(hidden, hidden, **kw) / math.sqrt(hidden))
            for _ in range(depth - 1)
        )
        self.output_weight = nn.Parameter(torch.rand(hidden, **kw) / math.sqrt(hidden))

    def _act(self, t: torch.Tensor) -> torch.Tensor:
        return F.softplus(t, beta=self.beta)

    def potential(self, y: torch.Tensor) -> torch.Tensor:
        """``psi(y)``, shape ``(B,)`` for ``y`` of shape ``(B, dim)``."""
        z = self._act(self.input_layers[0](y))
        for w, h in zip(self.hidden_weights, self.input_layers[1:]):
            z = self._act(z @ w.clamp_min(0).T + h(y))
        out = z @ self.output_weight.clamp_min(0)
        return out + self.alpha * (y * y).sum(-1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            y = y if y.requires_grad else y.detach().requires_grad_(True)
            psi = self.potential(y)
            (grad,) = torch.autograd.grad(psi.sum(), y, create_graph=True)
        return grad
