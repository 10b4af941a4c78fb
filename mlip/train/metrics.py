"""Loss and error metrics of predicted energies, forces and stress against references.

Both are written as *sums* plus counts, so that a sum over processes (``all_reduce``)
followed by a division gives exactly the metric of the global batch or data set.

Metrics (units): energy MAE / RMSE per atom (meV/atom) and per structure (meV), force MAE /
RMSE over components (meV/Å), force cosine similarity (mean over atoms), EFwT, stress MAE
(meV/Å^3).

EFwT ("energy and forces within threshold", OC20's S2EF metric) is the fraction of structures
whose energy error AND largest force-component error are both under a threshold. OC20 uses
``|dE| < 0.02 eV`` per structure and ``max |dF| < 0.03 eV/Å`` (:data:`OC20_EFWT`); a structure
passes only if every force component is that close, so the fraction is 0 for all but very
accurate models. mlip uses thresholds that do not depend on the size of the structure
(:data:`EFWT_ENERGY` per atom, :data:`EFWT_FORCES`); see :data:`EFWT_TEXT`.

torch is imported where it is used, so that ``mlip-train --help`` can print :data:`EFWT_TEXT`
without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["EFWT_ENERGY", "EFWT_FORCES", "EFWT_TEXT", "OC20_EFWT", "MetricSums", "loss_terms", "METRIC_NAMES"]

#: EFwT thresholds of mlip: |dE| / n_atoms in eV/atom and max |dF| (largest force-component
#: error of the structure) in eV/Å. 5 meV/atom is about 1 kcal/mol ("chemical accuracy") for a
#: small organic molecule of ~9 atoms and scales with size; 0.1 eV/Å on every component is the
#: force accuracy usually asked of a potential for stable MD. A short CPU run on ethanol scores a
#: few per cent, a well-trained model (force MAE ~ 10-20 meV/Å) close to 1.
EFWT_ENERGY = 0.005
EFWT_FORCES = 0.1
#: OC20's thresholds, for comparison: |dE| in eV per structure, max |dF| in eV/Å.
OC20_EFWT = (0.02, 0.03)
#: One line that defines the EFwT column (help texts, table footers).
EFWT_TEXT = (f"EFwT: fraction of structures with energy error < {1000 * EFWT_ENERGY:g} meV/atom and every force "
             f"component error < {1000 * EFWT_FORCES:g} meV/Å (OC20's S2EF metric, which uses "
             f"{1000 * OC20_EFWT[0]:g} meV per structure and {1000 * OC20_EFWT[1]:g} meV/Å)")

# new sums go at the end: checkpoints hold this tensor, and an older (shorter) one still restores
_SUMS = ("graphs", "atoms", "e_abs", "e_sq", "f_abs", "f_sq", "f_n", "f_cos", "efwt", "s_abs", "s_sq", "s_n",
         "et_abs", "et_sq")

#: The names :meth:`MetricSums.compute` returns.
METRIC_NAMES = ("loss", "energy_mae", "energy_rmse", "energy_total_mae", "energy_total_rmse", "forces_mae",
                "forces_rmse", "forces_cos", "efwt", "stress_mae")


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
        import torch

        self.tensor = torch.zeros(len(_SUMS), dtype=torch.float64, device=device)

    def _add(self, name: str, value) -> None:
        self.tensor[_SUMS.index(name)] += value

    def update(self, out: dict, batch) -> None:
        """Add a batch's errors (``out``: model outputs, ``batch``: graphs with targets)."""
        import torch

        with torch.no_grad():
            b = batch.batch.to(out["energy"].device)
            g = out["energy"].shape[0]
            n = batch.natoms.to(out["energy"].device, torch.float64)
            de = out["energy"].double() - batch.ref_energy.to(out["energy"].device).double()
            self._add("graphs", g)
            self._add("atoms", n.sum())  # a tensor: no host sync per step
            self._add("e_abs", (de.abs() / n).sum())
            self._add("e_sq", (de / n).pow(2).sum())
            self._add("et_abs", de.abs().sum())
            self._add("et_sq", de.pow(2).sum())
            efwt = de.abs() / n < EFWT_ENERGY
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
            "energy_total_mae": 1000 * s["et_abs"] / g,
            "energy_total_rmse": 1000 * (s["et_sq"] / g) ** 0.5,
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
