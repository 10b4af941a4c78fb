"""Evaluate a potential on a data set: metrics (optionally reduced over processes) and predictions."""

from __future__ import annotations

import numpy as np
import torch

from .data import GraphTransform, iterate_batches
from .distributed import DistInfo, all_reduce_sum
from .metrics import MetricSums

__all__ = ["validation_metrics", "evaluate_dataset", "format_table", "TABLE_COLUMNS"]

#: (key, header) of the metrics table.
TABLE_COLUMNS = (("energy_mae", "E MAE meV/atom"), ("energy_rmse", "E RMSE meV/atom"),
                 ("forces_mae", "F MAE meV/Å"), ("forces_rmse", "F RMSE meV/Å"),
                 ("forces_cos", "F cos"), ("efwt", "EFwT"), ("stress_mae", "S MAE meV/Å³"))


def validation_metrics(model, batches, loss_weights, *, info: DistInfo | None = None, use_stress: bool = False,
                       collect: bool = False):
    """Metrics of ``model`` over ``batches`` (graph batches with targets).

    Returns ``(metrics, predictions)``; metrics are summed over processes when ``info`` says
    there are several. ``predictions`` (``collect=True``, this process's structures only) holds
    numpy arrays ``energy``, ``ref_energy``, ``natoms`` [S] and ``forces``, ``ref_forces`` [A, 3].
    """
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    sums = MetricSums(info.device)
    keep = {k: [] for k in ("energy", "ref_energy", "natoms", "forces", "ref_forces")}
    try:
        for batch in batches:
            batch = batch.to(info.device)
            with torch.no_grad():  # the model still takes its derivatives; outputs come back detached
                out = model(batch, forces=True, stress=use_stress, create_graph=False)
            out = {k: v.detach() for k, v in out.items()}
            sums.update(out, batch)
            if collect:
                keep["energy"].append(out["energy"].double().cpu().numpy())
                keep["ref_energy"].append(batch.ref_energy.double().cpu().numpy())
                keep["natoms"].append(batch.natoms.cpu().numpy())
                keep["forces"].append(out["forces"].double().cpu().numpy())
                keep["ref_forces"].append(batch.ref_forces.double().cpu().numpy())
    finally:
        model.train(was_training)
    all_reduce_sum(sums.tensor, info)
    metrics = sums.compute(loss_weights)
    metrics["structures"] = sums.count()
    pred = {k: (np.concatenate(v) if v else np.zeros((0, 3) if "forces" in k else 0)) for k, v in keep.items()}
    return metrics, pred


def evaluate_dataset(model, paths, split, *, batch_size: int = 32, loss_weights=None, device="cpu",
                     use_stress: bool | None = None):
    """Evaluate on ``split`` of HDF5 ``paths`` in one process; returns ``(metrics, predictions)``.

    Raises ``ValueError`` when the data holds elements the model does not know.
    """
    from mlip.datasets import StreamingDataset

    from .config import LossConfig

    ds = StreamingDataset(paths, split, shuffle=False)
    if use_stress is None:
        use_stress = all("stress" in s.optional for s in ds.shards)
    batches = iterate_batches(ds, batch_size, GraphTransform(model.r_max), drop_last=False)
    info = DistInfo(device=torch.device(device))
    return validation_metrics(model, batches, loss_weights or LossConfig(), info=info, use_stress=use_stress,
                              collect=True)


def format_table(rows: dict[str, dict]) -> str:
    """Plain-text table: one line per data set name, the columns of :data:`TABLE_COLUMNS`."""
    name_w = max([len("data")] + [len(n) for n in rows])
    head = f"{'data':<{name_w}}  {'N':>6}  " + "  ".join(f"{h:>15}" for _, h in TABLE_COLUMNS)
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        cells = []
        for k, _ in TABLE_COLUMNS:
            v = m.get(k, float("nan"))
            if v != v:  # NaN: not in the data (stress)
                cells.append(f"{'-':>15}")
            else:
                cells.append(f"{v:>15.4f}" if k in ("forces_cos", "efwt") else f"{v:>15.3f}")
        lines.append(f"{name:<{name_w}}  {int(m.get('structures', 0)):>6}  " + "  ".join(cells))
    return "\n".join(lines)
