"""EvoNorm normalisation-activation layers.

Liu, Brock, Simonyan, Le, "Evolving Normalization-Activation Layers",
NeurIPS 2020 (arXiv:2004.02967).

For ``x`` of shape ``(N, C, *spatial)``:

* B0 (batch-dependent):
  ``y = x / max(sqrt(s_b^2(x) + eps), v1 * x + sqrt(s_i^2(x) + eps)) * gamma + beta``
  with ``s_b^2`` the batch variance per channel over ``(N, *spatial)`` (running
  average at evaluation) and ``s_i^2`` the instance variance over ``spatial``.
* S0 (batch-independent):
  ``y = x * sigmoid(v1 * x) / sqrt(s_g^2(x) + eps) * gamma + beta`` with
  ``s_g^2`` the variance over each group of ``C / groups`` channels and ``spatial``.

Variances are biased (divide by the count), as in the paper's pseudocode.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EvoNormB0", "EvoNormS0"]


def _affine_shape(channels: int, ndim: int) -> tuple[int, ...]:
    return (1, channels) + (1,) * (ndim - 2)


class EvoNormB0(nn.Module):
    """EvoNorm-B0: ``(N, C, *spatial) -> (N, C, *spatial)``.

    Parameters ``gamma`` (ones), ``beta`` (zeros), ``v1`` (ones), each of shape
    ``(C,)``; buffer ``running_var`` ``(C,)`` updated with ``momentum`` in training.
    """

    def __init__(
        self,
        channels: int,
        *,
        eps: float = 1e-5,
        momentum: float = 0.1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.channels, self.eps, self.momentum = channels, eps, momentum
        self.gamma = nn.Parameter(torch.ones(channels, **kw))
        self.beta = nn.Parameter(torch.zeros(channels, **kw))
        self.v1 = nn.Parameter(torch.ones(channels, **kw))
        self.register_buffer("running_var", torch.ones(channels, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = _affine_shape(self.channels, x.dim())
        spatial = tuple(range(2, x.dim()))
        if self.training:
            batch_var = x.var(dim=(0,) + spatial, unbiased=False)
            with torch.no_grad():
                # Running estimate of the population variance, as in BatchNorm.
                n = x.numel() / self.channels
                unbiased = batch_var * (n / max(n - 1, 1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        else:
            batch_var = self.running_var
        inst_var = x.var(dim=spatial, unbiased=False, keepdim=True)
        den = torch.maximum(
            torch.sqrt(batch_var.reshape(shape) + self.eps),
            self.v1.reshape(shape) * x + torch.sqrt(inst_var + self.eps),
        )
        return x / den * self.gamma.reshape(shape) + self.beta.reshape(shape)


class EvoNormS0(nn.Module):
    """EvoNorm-S0: ``(N, C, *spatial) -> (N, C, *spatial)``, ``C`` divisible by ``groups``.

    Parameters ``gamma`` (ones), ``beta`` (zeros), ``v1`` (ones), each ``(C,)``.
    """

    def __init__(
        self,
        channels: int,
        groups: int = 32,
        *,
        eps: float = 1e-5,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels={channels} is not divisible by groups={groups}")
        kw = dict(dtype=dtype, device=device)
        self.channels, self.groups, self.eps = channels, groups, eps
        self.gamma = nn.Parameter(torch.ones(channels, **kw))
        self.beta = nn.Parameter(torch.zeros(channels, **kw))
        self.v1 = nn.Parameter(torch.ones(channels, **kw))

    def group_std(self, x: torch.Tensor) -> torch.Tensor:
        """``sqrt(var + eps)`` over each channel group and the spatial axes, broadcast to ``x.shape``."""
        n = x.shape[0]
        g = x.reshape(n, self.groups, -1)
        var = g.var(dim=-1, unbiased=False, keepdim=True)
        std = torch.sqrt(var + self.eps).expand_as(g)
        return std.reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = _affine_shape(self.channels, x.dim())
        num = x * torch.sigmoid(self.v1.reshape(shape) * x)
        return num / self.group_std(x) * self.gamma.reshape(shape) + self.beta.reshape(shape)
