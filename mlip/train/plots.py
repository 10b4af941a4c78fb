"""PNG plots of a run (matplotlib, Agg backend): learning curve and parity plots.

matplotlib is the optional extra ``plots`` (``pip install 'mlip[plots]'``) and is imported only
when a plot is drawn. Without it, ``mlip-train fit`` and ``mlip-train eval --out`` say so in one
line (:func:`unavailable`) and write everything but the PNG files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["learning_curve", "parity_plots", "unavailable"]

_MISSING = "matplotlib is not installed (pip install 'mlip[plots]'); no PNG plots will be written"


def unavailable() -> str | None:
    """``None`` when plots can be drawn, else a one-line note that matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return _MISSING
    return None


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("PNG plots need matplotlib: pip install 'mlip[plots]'") from exc

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def learning_curve(rows: list[dict], path) -> Path:
    """Loss, energy MAE and force MAE against step (train and val) from ``metrics.csv`` rows."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in zip(axes, ("loss", "energy_mae", "forces_mae"),
                              ("loss", "energy MAE (meV/atom)", "force MAE (meV/Å)")):
        for split, style in (("train", "-"), ("val", "o-")):
            pts = [(int(r["step"]), float(r[key])) for r in rows
                   if r["split"] == split and r.get(key) not in ("", None)]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, style, label=split, markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parity_plots(pred: dict, path, title: str = "") -> Path:
    """Predicted against reference energy per atom (eV/atom) and force components (eV/Å).

    ``pred``: arrays ``energy``, ``ref_energy``, ``natoms``, ``forces``, ``ref_forces``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    n = np.asarray(pred["natoms"], dtype=float)
    panels = ((np.asarray(pred["ref_energy"]) / n, np.asarray(pred["energy"]) / n, "energy (eV/atom)"),
              (np.asarray(pred["ref_forces"]).ravel(), np.asarray(pred["forces"]).ravel(), "force component (eV/Å)"))
    for ax, (ref, out, label) in zip(axes, panels):
        ax.scatter(ref, out, s=4, alpha=0.5)
        lo, hi = float(min(ref.min(), out.min())), float(max(ref.max(), out.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        mae = float(np.abs(out - ref).mean())
        ax.set_title(f"{title} {label.split(' (')[0]}: MAE {1000 * mae:.2f} m{label.split('(')[1][:-1]}")
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
