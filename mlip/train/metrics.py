"""Loss and error metrics of predicted energies, forces and stress against references.

Both are written as *sums* plus counts, so that a sum over processes (``all_reduce``)
followed by a division gives exactly the metric of the global batch or data set.

Metrics (units): energy MAE / RMSE per atom (meV/atom), force MAE / RMSE over components
(meV/Å), force cosine similarity (mean over atoms), EFwT (fraction of structures with
``|dE| < 0.02 eV`` and ``max |dF| < 0.03 eV/Å``, as OC20), stress MAE (meV/Å^3).
"""

from __future__ import annotations

import torch

__all__ = ["EFWT_ENERGY", "EFWT_FORCES", "MetricSums", "loss_terms", "METRIC_NAMES"]

#: EFwT thresholds: |dE| in eV and max |dF| in eV/Å.
EFWT_ENERGY = 0.02
EFWT_FORCES = 0.03

_SUMS = ("graphs", "atoms", "e_abs", "e_sq", "f_abs", "f_sq", "f_n", "f_cos", "efwt", "s_abs", "s_sq", "s_n")

#: The names :meth:`MetricSums.compute` returns.
METRIC_NAMES = ("loss", "energy_mae", "energy_rmse", "forces_mae", "forces_rmse", "forces_cos", "efwt",
                "stress_mae")


def loss_terms(out: dict, batch, *, use_stress: bool) -> dict[str, torch.Tensor]:
    """Summed squared errors of one batch (differentiable).

    Returns ``{"e": sum_g ((E - E_ref)/n_g)^2, "f": sum_atoms,xyz (F - F_ref)^2,
    "s": sum_g,ij (S - S_ref)^2 (0 without stress)}``; divide by the global graph count,
    3 x atom count and 9 x graph count for the means.
    """
    dtype = out["energy"].dtype
    n = batch.natoms.to(out["energy"].device, dtype)
    de = (out["energy"] - batch.ref_energy.to(out["energy"].device, dtype)) / n
    terms = {"e": de.pow(2).sum()}
    if "forces" in out:
        terms["f"] = (out["forces"] - batch.ref_forces.to(out["forces"].device, dtype)).pow(2).sum()
    else:
        terms["f"] = de.new_zeros(())
    if use_stress and "stress" in out:
        terms["s"] = (out["stress"] - batch.ref_stress.to(out["stress"].device, dtype).view(-1, 3, 3)).pow(2).sum()
    else:
        terms["s"] = de.new_zeros(())
    return terms


class MetricSums:
    """Running sums of errors over batches; ``tensor`` is reduced across processes as is."""

    def __init__(self, device="cpu"):
        self.tensor = torch.zeros(len(_SUMS), dtype=torch.float64, device=device)

    def _add(self, name: str, value) -> None:
        self.tensor[_SUMS.index(name)] += value

    def update(self, out: dict, batch) -> None:
        """Add a batch's errors (``out``: model outputs, ``batch``: graphs with targets)."""
        with torch.no_grad():
            b = batch.batch.to(out["energy"].device)
            g = out["energy"].shape[0]
            n = batch.natoms.to(out["energy"].device, torch.float64)
            de = out["energy"].double() - batch.ref_energy.to(out["energy"].device).double()
            self._add("graphs", g)
            self._add("atoms", float(n.sum()))
            self._add("e_abs", (de.abs() / n).sum())
            self._add("e_sq", (de / n).pow(2).sum())
            efwt = de.abs() < EFWT_ENERGY
            if "forces" in out:
                df = out["forces"].double() - batch.ref_forces.to(out["forces"].device).double()
                self._add("f_abs", df.abs().sum())
                self._add("f_sq", df.pow(2).sum())
                self._add("f_n", df.numel())
                cos = torch.nn.functional.cosine_similarity(out["forces"].double(),
                                                            batch.ref_forces.to(df.device).double(), dim=1, eps=1e-12)
                self._add("f_cos", cos.sum())
                worst = torch.zeros(g, dtype=torch.float64, device=df.device).scatter_reduce_(
                    0, b, df.abs().amax(dim=1), "amax", include_self=True)
                efwt = efwt & (worst < EFWT_FORCES)
            self._add("efwt", efwt.sum())
            if "stress" in out and "ref_stress" in batch:
                ds = out["stress"].double() - batch.ref_stress.to(out["stress"].device).double().view(-1, 3, 3)
                self._add("s_abs", ds.abs().sum())
                self._add("s_sq", ds.pow(2).sum())
                self._add("s_n", ds.numel())

    def compute(self, weights) -> dict[str, float]:
        """Metrics of everything added (see the module docstring); ``weights``: a LossConfig."""
        s = dict(zip(_SUMS, self.tensor.tolist()))
        g, fn, sn = max(s["graphs"], 1.0), max(s["f_n"], 1.0), max(s["s_n"], 1.0)
        m = {
            "energy_mae": 1000 * s["e_abs"] / g,
            "energy_rmse": 1000 * (s["e_sq"] / g) ** 0.5,
            "forces_mae": 1000 * s["f_abs"] / fn,
            "forces_rmse": 1000 * (s["f_sq"] / fn) ** 0.5,
            "forces_cos": s["f_cos"] / max(s["atoms"], 1.0),
            "efwt": s["efwt"] / g,
            "stress_mae": 1000 * s["s_abs"] / sn if s["s_n"] else float("nan"),
        }
        m["loss"] = (weights.energy_weight * s["e_sq"] / g + weights.forces_weight * s["f_sq"] / fn
                     + weights.stress_weight * s["s_sq"] / sn)
        return m

    def count(self) -> int:
        """Structures added so far."""
        return int(self.tensor[0])
