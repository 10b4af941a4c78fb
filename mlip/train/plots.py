"""PNG plots of a run (matplotlib, Agg backend): learning curve and parity plots.

matplotlib is the optional extra ``plots`` (``pip install 'mlip[plots]'``) and is imported only
when a plot is drawn. Without it, ``mlip-train fit`` and ``mlip-train eval --out`` say so in one
line (:func:`unavailable`) and write everything but the PNG files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["learning_curve", "learning_curve_figure", "parity_plots", "parity_figure", "unavailable"]

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
    """Write :func:`learning_curve_figure` of ``rows`` to the PNG ``path`` (atomically)."""
    return _save(learning_curve_figure(rows), path)


def learning_curve_figure(rows: list[dict]):
    """Loss, energy MAE and force MAE against step (train and val) from ``metrics.csv`` rows,
    and the learning rate (a fourth panel); a matplotlib figure."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, key, label in zip(axes, ("loss", "energy_mae", "forces_mae"),
                              ("loss", "energy MAE (meV/atom)", "force MAE (meV/Å)")):
        for split, style in (("train", "-"), ("val", "o-")):
            pts = _points(rows, key, split)
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, style, label=split, markersize=3)
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.legend()
    pts = _points(rows, "lr", "train") or _points(rows, "lr", "val")
    ax = axes[3]
    if pts:
        x, y = zip(*pts)
        ax.plot(x, y, "-", color="tab:green")
    ax.set_ylabel("learning rate")
    ax.set_yscale("log")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _points(rows, key, split):
    return [(int(r["step"]), float(r[key])) for r in rows if r["split"] == split and r.get(key) not in ("", None)]


def _save(fig, path) -> Path:
    from mlip.atomic import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        _pyplot().close(fig)
    return path


def parity_plots(pred: dict, path, title: str = "") -> Path:
    """Write :func:`parity_figure` of ``pred`` to the PNG ``path`` (atomically)."""
    return _save(parity_figure(pred, title), path)


def parity_figure(pred: dict, title: str = ""):
    """Predicted against reference energy per atom and force components.

    Energies are drawn relative to the mean reference energy per atom of the set, in meV/atom
    (the axis label says so; the absolute energies are large numbers that differ in their last
    digits), forces in eV/Å. ``pred``: arrays ``energy``, ``ref_energy``, ``natoms``, ``forces``,
    ``ref_forces``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.4))
    n = np.asarray(pred["natoms"], dtype=float)
    ref_e, out_e = np.asarray(pred["ref_energy"]) / n, np.asarray(pred["energy"]) / n
    mean = float(ref_e.mean()) if ref_e.size else 0.0
    panels = ((1000 * (ref_e - mean), 1000 * (out_e - mean), 1.0,
               "energy - mean (meV/atom)", "energy", "meV/atom"),
              (np.asarray(pred["ref_forces"]).ravel(), np.asarray(pred["forces"]).ravel(), 1000.0,
               "force component (eV/Å)", "force", "meV/Å"))
    for ax, (ref, out, to_milli, label, name, unit) in zip(axes, panels):
        ax.scatter(ref, out, s=4, alpha=0.5)
        if ref.size:
            lo, hi = float(min(ref.min(), out.min())), float(max(ref.max(), out.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            mae = float(np.abs(out - ref).mean()) * to_milli
            extra = f"\nmean reference energy {mean:.4f} eV/atom" if name == "energy" else "\n"
            ax.set_title(f"{title} {name}: MAE {mae:.2f} {unit}".strip() + extra, fontsize=10)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.locator_params(nbins=6)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
