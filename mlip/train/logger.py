"""Metrics logs of a run: ``metrics.csv`` (always) and TensorBoard (when installed).

TensorBoard is optional (``pip install 'mlip[tensorboard]'``); without it the run writes
``metrics.csv`` only and says nothing (``mlip-train fit --help`` and the README say so once).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from mlip.atomic import atomic_open

__all__ = ["COLUMNS", "MetricsLog", "read_metrics"]

#: Columns of ``metrics.csv``. ``split`` is ``train`` (running means since the last row) or
#: ``val``; energies in meV/atom (``energy_total_*``: meV per structure), forces in meV/Å, stress in
#: meV/Å^3, ``efwt`` a fraction (:data:`mlip.train.metrics.EFWT_TEXT`);
#: ``orthoreg``: mean OrthoReg penalty ``R`` of the train steps (only with ``finetune.orthoreg_weight > 0``;
#: ``loss`` then includes ``orthoreg_weight * R``).
COLUMNS = ("step", "epoch", "elapsed_s", "split", "lr", "loss", "energy_mae", "energy_rmse", "energy_total_mae",
           "energy_total_rmse", "forces_mae", "forces_rmse", "forces_cos", "efwt", "stress_mae", "orthoreg",
           "structures_per_s")


class MetricsLog:
    """Appends rows to ``<out>/metrics.csv`` and scalars to TensorBoard in ``<out>/tensorboard``.

    On resume (``resume_step``), rows after the checkpoint's step are dropped first, so the
    log matches a run that was never interrupted.
    """

    def __init__(self, out: Path, *, resume_step: int | None = None, tensorboard: bool = True):
        self.path = Path(out) / "metrics.csv"
        if resume_step is not None and self.path.exists():
            rows = [r for r in read_metrics(self.path) if int(r["step"]) <= resume_step]
            self._write_all(rows)
        elif resume_step is None or not self.path.exists():
            self._write_all([])
        self.tb = _tensorboard(Path(out) / "tensorboard") if tensorboard else None

    def _write_all(self, rows) -> None:
        with atomic_open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in COLUMNS})

    def write(self, row: dict) -> None:
        """Append one row (keys from :data:`COLUMNS`; missing ones stay empty)."""
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow(
                {k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in ((k, row.get(k, "")) for k in COLUMNS)})
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "split", "epoch") and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{row['split']}/{k}", v, int(row["step"]))

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.tb is not None:
            self.tb.close()


def _tensorboard(folder: Path):
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: metrics.csv holds everything
        return None
    return SummaryWriter(str(folder))


def read_metrics(path) -> list[dict]:
    """Rows of a ``metrics.csv`` as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
