"""Evaluate a potential on a data set: metrics (optionally reduced over processes), predictions,
and the predictions as an extxyz file (``mlip-train eval --out``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch

from .data import GraphTransform, iterate_batches
from .distributed import DistInfo, all_reduce_sum
from .metrics import EFWT_TEXT, MetricSums

__all__ = ["validation_metrics", "evaluate_dataset", "format_table", "write_predictions", "TABLE_COLUMNS",
           "PREDICTION_KEYS", "TABLE_NOTE"]

#: (key, header) of the metrics table.
TABLE_COLUMNS = (("energy_mae", "E MAE meV/atom"), ("energy_rmse", "E RMSE meV/atom"),
                 ("energy_total_mae", "E MAE meV/struct"), ("forces_mae", "F MAE meV/Å"),
                 ("forces_rmse", "F RMSE meV/Å"), ("forces_cos", "F cos"), ("efwt", "EFwT"),
                 ("stress_mae", "S MAE meV/Å³"))
#: What the columns mean, printed under the table.
TABLE_NOTE = ("F cos: mean cosine of predicted and reference force "
              f"per atom; {EFWT_TEXT}")

#: Keys of the predictions file (:func:`write_predictions`): per frame (``info``) the energies in
#: eV and stresses in eV/Å^3 (3x3, ASE's sign), per atom (``arrays``) the forces in eV/Å.
PREDICTION_KEYS = {"energy": ("REF_energy", "MLIP_energy"), "forces": ("REF_forces", "MLIP_forces"),
                   "stress": ("REF_stress", "MLIP_stress")}

_KEEP = ("energy", "ref_energy", "natoms", "forces", "ref_forces", "positions", "numbers", "cell", "pbc", "stress",
         "ref_stress")


def validation_metrics(model, batches, loss_weights, *, info: DistInfo | None = None, use_stress: bool = False,
                       collect: bool = False):
    """Metrics of ``model`` over ``batches`` (graph batches with targets).

    Returns ``(metrics, predictions)``; metrics are summed over processes when ``info`` says
    there are several. ``predictions`` (``collect=True``, this process's structures only) holds
    numpy arrays ``energy``, ``ref_energy`` [S] eV, ``natoms`` [S], ``forces``, ``ref_forces``
    [A, 3] eV/Å, ``positions`` [A, 3] Å, ``numbers`` [A], ``cell`` [S, 3, 3] Å, ``pbc`` [S, 3]
    and, with ``use_stress``, ``stress``, ``ref_stress`` [S, 3, 3] eV/Å^3.
    """
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    sums = MetricSums(info.device)
    keep = {k: [] for k in _KEEP}
    try:
        for batch in batches:
            batch = batch.to(info.device)
            with torch.no_grad():  # the model still takes its derivatives; outputs come back detached
                out = model(batch, forces=True, stress=use_stress, create_graph=False)
            out = {k: v.detach() for k, v in out.items()}
            sums.update(out, batch)
            if collect:
                got = {"energy": out["energy"], "ref_energy": batch.ref_energy, "natoms": batch.natoms,
                       "forces": out["forces"], "ref_forces": batch.ref_forces, "positions": batch.pos,
                       "numbers": batch.atomic_numbers, "cell": batch.cell.view(-1, 3, 3),
                       "pbc": batch.pbc.view(-1, 3)}
                if use_stress and "stress" in out and "ref_stress" in batch:
                    got.update(stress=out["stress"].view(-1, 3, 3), ref_stress=batch.ref_stress.view(-1, 3, 3))
                for k, v in got.items():
                    v = v.cpu()
                    keep[k].append((v.double() if v.is_floating_point() else v).numpy())
    finally:
        model.train(was_training)
    all_reduce_sum(sums.tensor, info)
    metrics = sums.compute(loss_weights)
    metrics["structures"] = sums.count()
    empty = {"forces": (0, 3), "ref_forces": (0, 3), "positions": (0, 3), "cell": (0, 3, 3), "pbc": (0, 3)}
    pred = {k: np.concatenate(v) if v else np.zeros(empty.get(k, 0)) for k, v in keep.items()
            if v or k not in ("stress", "ref_stress")}
    return metrics, pred


def evaluate_dataset(model, paths, split, *, batch_size: int = 32, loss_weights=None, device="cpu",
                     use_stress: bool | None = None):
    """Evaluate on ``split`` of HDF5 ``paths`` in one process; returns ``(metrics, predictions)``
    (see :func:`validation_metrics`).

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


def write_predictions(pred: dict, path) -> Path:
    """Write the structures of ``pred`` (:func:`validation_metrics` with ``collect=True``) with
    reference and predicted values as extxyz (atomically); returns the path.

    Each frame holds the positions, numbers, cell and pbc, and the keys of
    :data:`PREDICTION_KEYS`: ``REF_energy``, ``MLIP_energy`` (eV) in ``info``, ``REF_forces``,
    ``MLIP_forces`` (eV/Å) in ``arrays``, and with stress ``REF_stress``, ``MLIP_stress``
    (eV/Å^3, 3x3) in ``info`` (like MACE's ``eval_configs``: ``REF_*`` and ``MACE_*``).
    """
    import ase
    import ase.io

    from mlip.atomic import atomic_path

    ends = np.cumsum(np.asarray(pred["natoms"], dtype=np.int64))
    starts = ends - np.asarray(pred["natoms"], dtype=np.int64)
    frames = []
    for s, (a, b) in enumerate(zip(starts, ends)):
        atoms = ase.Atoms(numbers=pred["numbers"][a:b], positions=pred["positions"][a:b], cell=pred["cell"][s],
                          pbc=pred["pbc"][s].astype(bool))
        atoms.info["REF_energy"] = float(pred["ref_energy"][s])
        atoms.info["MLIP_energy"] = float(pred["energy"][s])
        if "stress" in pred:
            atoms.info["REF_stress"] = pred["ref_stress"][s].reshape(9)
            atoms.info["MLIP_stress"] = pred["stress"][s].reshape(9)
        atoms.arrays["REF_forces"] = pred["ref_forces"][a:b]
        atoms.arrays["MLIP_forces"] = pred["forces"][a:b]
        frames.append(atoms)
    path = Path(path)
    with atomic_path(path) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
    return path


def format_table(rows: dict[str, dict], *, note: bool = False) -> str:
    """Plain-text table: one line per data set name, the columns of :data:`TABLE_COLUMNS`
    (``note``: and :data:`TABLE_NOTE` under it)."""
    name_w = max([len("data")] + [len(n) for n in rows])
    widths = [max(len(h), 9) for _, h in TABLE_COLUMNS]
    head = f"{'data':<{name_w}}  {'N':>6}  " + "  ".join(f"{h:>{w}}" for (_, h), w in zip(TABLE_COLUMNS, widths))
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        cells = []
        for (k, _), w in zip(TABLE_COLUMNS, widths):
            v = m.get(k, float("nan"))
            if v != v:  # NaN: not in the data (stress)
                cells.append(f"{'-':>{w}}")
            else:
                cells.append(f"{v:>{w}.4f}" if k in ("forces_cos", "efwt") else f"{v:>{w}.3f}")
        lines.append(f"{name:<{name_w}}  {int(m.get('structures', 0)):>6}  " + "  ".join(cells))
    if note:
        lines.extend(textwrap.wrap(TABLE_NOTE, max(len(head), 80)))
    return "\n".join(lines)
