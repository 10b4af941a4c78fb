"""OrthoReg: orthogonality regulariser on fine-tuning updates.

Liu, Yin, Wang, Fan, Shi, Li, Gao, Tao, "Understanding and Enforcing Weight
Disentanglement in Task Arithmetic", CVPR 2026 (arXiv:2604.17078).

``R = sum_W || dW^T dW - I ||_F`` with ``dW = W_finetuned - W_pretrained`` over
every weight matrix the two models share.  Orthonormal updates (task vectors)
keep the features a task uses separate from those of other tasks, which is
what makes task-arithmetic merging of several fine-tuned models work."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = ["orthoreg"]

StateLike = nn.Module | Mapping[str, torch.Tensor]


def _tensors(obj: StateLike, *, detach: bool) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        items = dict(obj.named_parameters())
    elif isinstance(obj, Mapping):
        items = dict(obj)
    else:
        raise TypeError(f"expected an nn.Module or a state dict, got {type(obj).__name__}")
    return {k: (v.detach() if detach else v) for k, v in items.items()}


def orthoreg(
    finetuned: StateLike,
    pretrained: StateLike,
    *,
    gram: str = "auto",
    include: Callable[[str, torch.Tensor], bool] | None = None,
) -> torch.Tensor:
    """Sum over shared weight matrices of ``||G - I||_F``, ``G`` the Gram matrix of ``dW``.

    Args:
        finetuned: the model being trained (``nn.Module`` -> its parameters, so
            gradients flow) or a state dict.
        pretrained: the reference weights (module or state dict; detached).
        gram: ``"columns"``: ``G = dW^T dW`` (``(in, in)``, zero iff the columns of
            ``dW`` are orthonormal); ``"rows"``: ``G = dW dW^T``; ``"auto"``
            (default): the smaller of the two, so that wide matrices can also
            reach zero (``dW^T dW`` of a wide ``dW`` is rank deficient).
        include: ``include(name, tensor) -> bool`` restricts the sum; by default
            every tensor with ``ndim >= 2`` present in both with the same shape.
            Tensors with ``ndim > 2`` (convolutions) are reshaped to ``(shape[0], -1)``.

    Returns a scalar tensor.  Raises if no tensor qualifies.
    """
    if gram not in ("auto", "columns", "rows"):
        raise ValueError(f"gram must be 'auto', 'columns' or 'rows', got {gram!r}")
    new = _tensors(finetuned, detach=False)
    old = _tensors(pretrained, detach=True)
    terms = []
    for name, w in new.items():
        if name not in old or w.dim() < 2 or old[name].shape != w.shape:
            continue
        if include is not None and not include(name, w):
            continue
        dw = (w - old[name].to(w)).reshape(w.shape[0], -1)
        rows, cols = dw.shape
        use_cols = gram == "columns" or (gram == "auto" and cols <= rows)
        g = dw.T @ dw if use_cols else dw @ dw.T
        eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
        terms.append(torch.linalg.matrix_norm(g - eye, "fro"))
    if not terms:
        raise ValueError("no weight matrix is shared between the fine-tuned and pretrained weights")
    return torch.stack(terms).sum()
