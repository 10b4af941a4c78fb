"""Heavy-tailed self-regularisation (HTSR) alpha of weight matrices.

Martin and Mahoney, "Implicit Self-Regularization in Deep Neural Networks"
(JMLR 2021) and "Heavy-Tailed Universality Predicts Trends in Test Accuracies"
(2019/2021), as implemented in WeightWatcher: fit a power law
``rho(lambda) ~ lambda^(-alpha)`` to the tail of the empirical spectral
density of ``X = W^T W``.  The fit is the continuous power-law maximum
likelihood (Hill) estimator with ``x_min`` chosen to minimise the
Kolmogorov--Smirnov distance (Clauset, Shalizi, Newman, SIAM Review 2009).

Rule of thumb (Martin & Mahoney): ``2 <= alpha <= 6`` is heavy-tailed and
"well trained"; random (Marchenko--Pastur) matrices have no power-law tail and
give large alpha, which :attr:`HTSRFit.heavy_tailed` flags as ``False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["HTSRFit", "power_law_fit", "htsr_alpha", "htsr_report"]


@dataclass(frozen=True)
class HTSRFit:
    """Power-law fit of a sample (or of an eigenvalue spectrum).

    ``alpha``: density exponent, ``p(x) ~ x^(-alpha)`` for ``x >= xmin``;
    ``xmin``: start of the fitted tail; ``ks_distance``: KS distance of the fit;
    ``n_tail``: samples in the tail; ``n``: samples in total;
    ``heavy_tailed``: ``alpha <= alpha_max`` (WeightWatcher uses 6).
    """

    alpha: float
    xmin: float
    ks_distance: float
    n_tail: int
    n: int
    heavy_tailed: bool


def power_law_fit(
    samples: torch.Tensor,
    *,
    min_tail: int = 10,
    max_candidates: int = 1000,
    alpha_max: float = 6.0,
) -> HTSRFit:
    """Clauset et al. continuous power-law fit of positive ``samples`` (any shape, flattened).

    For each candidate ``x_min`` (a sample value with at least ``min_tail``
    samples at or above it), the MLE is ``alpha = 1 + n / sum ln(x_i / x_min)``
    and the KS distance is ``max |S(x) - P(x)|`` between the empirical CDF of the
    tail and ``P(x) = 1 - (x / x_min)^(1 - alpha)``.  The candidate with the
    smallest KS distance wins.  At most ``max_candidates`` evenly spaced
    candidates are tried (all of them for smaller samples).
    """
    x = torch.sort(samples.detach().flatten().to(torch.float64)).values
    x = x[x > 0]
    n = x.numel()
    if n < min_tail + 1:
        raise ValueError(f"need at least {min_tail + 1} positive samples, got {n}")
    log_x = torch.log(x)
    # suffix[i] = sum_{j >= i} log x_j, so each candidate's MLE is O(1).
    suffix = torch.flip(torch.cumsum(torch.flip(log_x, [0]), 0), [0])
    last = n - min_tail
    cand = torch.arange(0, last + 1)
    if cand.numel() > max_candidates:
        cand = torch.unique(torch.linspace(0, last, max_candidates).round().long())
    # With ties the tail starts at the first occurrence of the value.
    first = torch.ones_like(cand, dtype=torch.bool)
    first[cand > 0] = x[cand[cand > 0]] != x[cand[cand > 0] - 1]
    cand = cand[first]
    m = (n - cand).to(torch.float64)
    denom = suffix[cand] - m * log_x[cand]
    ok = denom > 0
    cand, m, denom = cand[ok], m[ok], denom[ok]
    if cand.numel() == 0:
        raise ValueError("no valid x_min candidate (all samples equal?)")
    alphas = 1.0 + m / denom
    j = torch.arange(n)
    ks = torch.empty_like(alphas)
    for s in range(0, cand.numel(), 64):
        # Candidates in a block share the full sorted sample; entries j < i are masked.
        ci, ai, mi = cand[s : s + 64, None], alphas[s : s + 64, None], m[s : s + 64, None]
        fit_cdf = 1.0 - torch.exp((1.0 - ai) * (log_x[None, :] - log_x[ci]))
        k = (j[None, :] - ci).to(torch.float64)
        # The empirical CDF jumps at every sample: compare with both sides.
        d = torch.maximum((k + 1) / mi - fit_cdf, fit_cdf - k / mi)
        ks[s : s + 64] = torch.where(j[None, :] >= ci, d, -torch.inf).max(dim=1).values
    b = int(torch.argmin(ks))
    best = (ks[b].item(), alphas[b].item(), x[cand[b]].item(), int(n - cand[b]))
    d, alpha, xmin, m = best
    return HTSRFit(alpha=alpha, xmin=xmin, ks_distance=d, n_tail=m, n=n, heavy_tailed=alpha <= alpha_max)


def htsr_alpha(matrix: torch.Tensor, **fit_kwargs) -> HTSRFit:
    """HTSR fit of the eigenvalues of ``W^T W / N`` for ``matrix`` ``W`` of shape ``(N, M)``.

    Only the ``min(N, M)`` non-trivial eigenvalues are used (WeightWatcher
    convention).  Tensors with more than two dimensions (convolutions) are
    reshaped to ``(shape[0], -1)``.  ``fit_kwargs`` go to :func:`power_law_fit`.
    """
    w = matrix.detach().to(torch.float64)
    if w.dim() < 2:
        raise ValueError(f"expected a matrix, got shape {tuple(matrix.shape)}")
    w = w.reshape(w.shape[0], -1)
    n_rows, n_cols = w.shape
    gram = w.T @ w if n_cols <= n_rows else w @ w.T
    eigs = torch.linalg.eigvalsh(gram / max(n_rows, n_cols))
    return power_law_fit(eigs, **fit_kwargs)


def htsr_report(module: nn.Module, *, min_size: int = 20, **fit_kwargs) -> dict[str, HTSRFit]:
    """:func:`htsr_alpha` for every 2-D weight of ``module`` (by parameter name).

    Matrices with fewer than ``min_size`` non-trivial eigenvalues are skipped:
    a tail fit on a handful of points is meaningless.
    """
    report: dict[str, HTSRFit] = {}
    for name, p in module.named_parameters():
        if p.dim() != 2 or min(p.shape) < min_size:
            continue
        report[name] = htsr_alpha(p, **fit_kwargs)
    return report
