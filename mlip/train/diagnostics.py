"""Weight diagnostics of a trained potential: HTSR alpha per layer (``mlip-train eval --diagnostics``).

Heavy-tailed self-regularisation (Martin & Mahoney): a power law ``rho(lambda) ~ lambda^-alpha``
fitted to the tail of the eigenvalue spectrum of ``W^T W`` of each weight matrix
(:func:`mlip.kernels.operators.htsr.htsr_alpha`). ``2 <= alpha <= 6`` is the "well trained",
heavy-tailed regime; random (untrained) matrices give large alpha.

Every parameter with ``ndim >= 2`` is listed (tensors with more dimensions flattened to
``(shape[0], -1)``, as :func:`~mlip.kernels.operators.htsr.htsr_alpha` does). Alpha is fitted only
where the matrix has at least ``min_size`` non-trivial eigenvalues (the default of
:func:`~mlip.kernels.operators.htsr.htsr_report`); smaller ones are listed with a note, since a tail
fit on a handful of eigenvalues is meaningless. For 2-D weights the fitted values are exactly
those of ``htsr_report(model, min_size=min_size)``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

__all__ = ["LayerDiagnostics", "weight_diagnostics", "format_diagnostics", "write_diagnostics_csv"]

CSV_COLUMNS = ("layer", "shape", "alpha", "heavy_tailed", "xmin", "ks_distance", "n_tail", "n_eigs", "note")


@dataclass
class LayerDiagnostics:
    """One weight tensor: name, shape, and its HTSR fit (``alpha`` NaN when not fitted, see ``note``)."""

    layer: str
    shape: tuple
    alpha: float = math.nan
    heavy_tailed: bool | None = None
    xmin: float = math.nan
    ks_distance: float = math.nan
    n_tail: int = 0
    n_eigs: int = 0
    note: str = ""


def weight_diagnostics(model: nn.Module, *, min_size: int = 20) -> list[LayerDiagnostics]:
    """HTSR fit of every weight tensor with ``ndim >= 2`` of ``model`` (by parameter name)."""
    from mlip.kernels.operators.htsr import htsr_alpha

    rows = []
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        flat = p.detach().reshape(p.shape[0], -1)
        row = LayerDiagnostics(name, tuple(p.shape), n_eigs=min(flat.shape))
        if min(flat.shape) < min_size:
            row.note = f"skipped: {min(flat.shape)} < {min_size} eigenvalues"
        else:
            try:
                fit = htsr_alpha(p)
            except ValueError as exc:  # e.g. too few positive eigenvalues
                row.note = f"no fit: {exc}"
            else:
                row.alpha, row.heavy_tailed, row.xmin = fit.alpha, fit.heavy_tailed, fit.xmin
                row.ks_distance, row.n_tail, row.n_eigs = fit.ks_distance, fit.n_tail, fit.n
        rows.append(row)
    return rows


def format_diagnostics(rows: list[LayerDiagnostics]) -> str:
    """Plain-text table: layer, shape, alpha, heavy-tailed flag (and a note for unfitted layers)."""
    name_w = max([len("layer")] + [len(r.layer) for r in rows])
    shape_w = max([len("shape")] + [len("x".join(map(str, r.shape))) for r in rows])
    head = f"{'layer':<{name_w}}  {'shape':>{shape_w}}  {'alpha':>8}  {'heavy-tailed':>12}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        alpha = "-" if math.isnan(r.alpha) else f"{r.alpha:.3f}"
        flag = "-" if r.heavy_tailed is None else ("yes" if r.heavy_tailed else "no")
        shape = "x".join(map(str, r.shape))
        lines.append(f"{r.layer:<{name_w}}  {shape:>{shape_w}}  {alpha:>8}  {flag:>12}  {r.note}".rstrip())
    fitted = [r for r in rows if not math.isnan(r.alpha)]
    if fitted:
        mean = sum(r.alpha for r in fitted) / len(fitted)
        lines.append(f"{len(fitted)} of {len(rows)} weight matrices fitted; mean alpha {mean:.3f}; "
                     f"{sum(bool(r.heavy_tailed) for r in fitted)} heavy-tailed (alpha <= 6)")
    else:
        lines.append(f"none of the {len(rows)} weight matrices is large enough for a fit")
    return "\n".join(lines)


def write_diagnostics_csv(rows: list[LayerDiagnostics], path) -> Path:
    """Write the rows to ``path`` (columns :data:`CSV_COLUMNS`; shape as ``AxB``, empty alpha when not fitted)."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow([r.layer, "x".join(map(str, r.shape)), "" if math.isnan(r.alpha) else repr(r.alpha),
                        "" if r.heavy_tailed is None else r.heavy_tailed,
                        "" if math.isnan(r.xmin) else repr(r.xmin),
                        "" if math.isnan(r.ks_distance) else repr(r.ks_distance), r.n_tail, r.n_eigs, r.note])
    return path
