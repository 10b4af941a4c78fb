"""2-D convolution with a general similarity in place of the inner product.

Each output is ``s(w_o, p)`` between filter ``w_o`` and input patch ``p``
(both flattened to ``C_in * k_h * k_w``):

* ``"dot"``: ``<w, p>`` (ordinary convolution);
* ``"polynomial"``: ``(<w, p> + c)^n`` -- Kervolution, Wang et al.,
  "Kervolutional Neural Networks", CVPR 2019;
* ``"gaussian"``: ``exp(-gamma ||w - p||^2)`` -- Kervolution;
* ``"l1"``: ``-sum_i a_i |w_i - p_i|`` -- AdderNet, Chen et al., "AdderNet: Do
  We Really Need Multiplications in Deep Learning?", CVPR 2020 (``a = 1``),
  with learnable non-negative per-filter weights ``a``;
* ``"l2"``: ``-sum_i a_i (w_i - p_i)^2``, the weighted squared-L2 analogue.

Patches are extracted with ``unfold`` (im2col).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GeneralizedConv2d"]

_SIMILARITIES = ("dot", "polynomial", "gaussian", "l1", "l2")


class GeneralizedConv2d(nn.Module):
    """Conv-like layer ``(B, C_in, H, W) -> (B, C_out, H_out, W_out)`` with similarity ``similarity``.

    ``H_out = (H + 2 padding - kernel_size) // stride + 1`` (same for ``W``).

    Args:
        similarity: one of ``"dot"``, ``"polynomial"``, ``"gaussian"``, ``"l1"``, ``"l2"``.
        degree, offset: ``n`` and ``c`` of the polynomial kernel.
        gamma: width of the Gaussian kernel.
        bias: add a learnable per-output-channel bias.

    Parameters: ``weight`` ``(C_out, C_in, k, k)``; for ``"l1"``/``"l2"`` also
    ``distance_weight`` ``(C_out, C_in, k, k)``, initialised to 1 and clamped
    at 0 in the forward pass so the distance stays a (semi-)metric.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        similarity: str = "dot",
        degree: int = 2,
        offset: float = 1.0,
        gamma: float = 1.0,
        bias: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if similarity not in _SIMILARITIES:
            raise ValueError(f"similarity must be one of {_SIMILARITIES}, got {similarity!r}")
        kw = dict(dtype=dtype, device=device)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding = stride, padding
        self.similarity, self.degree, self.offset, self.gamma = similarity, degree, offset, gamma
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, **kw))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.distance_weight = (
            nn.Parameter(torch.ones_like(self.weight)) if similarity in ("l1", "l2") else None
        )
        self.bias = nn.Parameter(torch.zeros(out_channels, **kw)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        k, s, pad = self.kernel_size, self.stride, self.padding
        h_out = (h + 2 * pad - k) // s + 1
        w_out = (w + 2 * pad - k) // s + 1
        patches = F.unfold(x, k, padding=pad, stride=s)  # (B, D, L), D = C_in k k
        wt = self.weight.flatten(1)  # (O, D)
        if self.similarity in ("dot", "polynomial", "gaussian"):
            dot = torch.einsum("od,bdl->bol", wt, patches)
            if self.similarity == "dot":
                out = dot
            elif self.similarity == "polynomial":
                out = (dot + self.offset) ** self.degree
            else:
                # ||w - p||^2 expanded so no (B, O, D, L) tensor is formed.
                sq = (wt * wt).sum(1)[None, :, None] - 2 * dot + (patches * patches).sum(1, keepdim=True)
                out = torch.exp(-self.gamma * sq.clamp_min(0))
        else:
            a = self.distance_weight.flatten(1).clamp_min(0)
            if self.similarity == "l2":
                out = -(
                    (a * wt * wt).sum(1)[None, :, None]
                    - 2 * torch.einsum("od,bdl->bol", a * wt, patches)
                    + torch.einsum("od,bdl->bol", a, patches * patches)
                )
            else:
                # |w - p| does not factorise; (B, O, D, L) is formed here.
                diff = (wt[None, :, :, None] - patches[:, None]).abs()
                out = -(a[None, :, :, None] * diff).sum(2)
        if self.bias is not None:
            out = out + self.bias[None, :, None]
        return out.reshape(b, self.out_channels, h_out, w_out)
