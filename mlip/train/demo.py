"""The main job: train a small potential on the bundled rMD17 ethanol sample, report, run MD.

``mlip-train demo --out runs/demo`` (or ``python -m mlip.train demo``):

1. trains the example config ``mlip/train/configs/ethanol.yaml`` on
   ``mlip/train/data/ethanol_rmd17_200.xyz`` (180 training / 20 validation frames) for a
   few minutes on CPU, printing the metrics table and writing the learning curve and
   parity plots into the run folder;
2. runs NVE molecular dynamics (velocity Verlet, 0.5 fs, 300 K start) of ethanol with the
   trained model through ASE and reports the total-energy drift.

Like :mod:`mlip.train.cli`, this module is an entry point, an application above every layer: it
may import :mod:`mlip.calculators` (step 2); the library modules of :mod:`mlip.train` must not.
The defaults below are those of ``mlip-train demo`` too.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["run_demo", "EXAMPLE_CONFIG", "BUNDLED_DATA", "MINUTES", "STEPS", "MD_STEPS", "THREADS"]

EXAMPLE_CONFIG = Path(__file__).parent / "configs" / "ethanol.yaml"
BUNDLED_DATA = Path(__file__).parent / "data" / "ethanol_rmd17_200.xyz"

#: Training wall-clock budget (minutes), training steps (the cosine schedule spans them), NVE MD
#: steps of 0.5 fs, torch CPU threads (1 is fastest for one small molecule).
MINUTES = 3.0
STEPS = 3000
MD_STEPS = 400
THREADS = 1


def run_demo(out, *, minutes: float = MINUTES, steps: int = STEPS, md_steps: int = MD_STEPS,
             threads: int | None = THREADS, overrides: list[str] | None = None) -> dict:
    """Train, report and run MD (see the module docstring); returns a summary dict."""
    import ase.io
    import torch

    from mlip.calculators import MLIPCalculator
    from mlip.md import run_md

    from .config import load_config
    from .trainer import fit

    out = Path(out)
    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(EXAMPLE_CONFIG, [f"out={out}", f"train.max_minutes={minutes}", f"train.max_steps={steps}",
                                       *(overrides or [])])
    if (out / "checkpoints" / "last.pt").exists():
        print(f"demo: replacing the earlier demo run in {out}", file=sys.stderr)
    res = fit(cfg, overwrite=True)

    atoms = ase.io.read(BUNDLED_DATA, index=0)
    atoms.pbc = False
    calc = MLIPCalculator(res.model_path)
    rows = run_md(atoms, calc, ensemble="nve", steps=md_steps, timestep=0.5, temperature=300.0, seed=0,
                  log_every=10, traj=out / "md.traj", log=out / "md.csv", progress=cfg.train.progress)
    drift = (rows[-1]["etot_eV"] - rows[0]["etot_eV"]) / len(atoms)
    temps = [r["temperature_K"] for r in rows]
    summary = {"model": str(res.model_path), "steps": res.step, "metrics": res.metrics,
               "md_steps": md_steps, "md_energy_drift_meV_per_atom": 1000 * drift,
               "md_temperature_K": [min(temps), max(temps)]}
    print(f"\nMD: {md_steps} NVE steps of 0.5 fs on ethanol with {res.model_path}: total energy "
          f"{rows[0]['etot_eV']:.5f} -> {rows[-1]['etot_eV']:.5f} eV (drift {1000 * drift:+.3f} meV/atom), "
          f"T {min(temps):.0f}-{max(temps):.0f} K")
    print(f"outputs in {out}: metrics.csv, metrics.json, learning_curve.png, parity_train.png, parity_val.png, "
          "model.pt, checkpoints/, md.traj, md.csv")
    return summary
