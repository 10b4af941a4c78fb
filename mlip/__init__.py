"""mlip: equivariant machine-learning interatomic potentials with swappable tensor-product backends.

Layers, and the direction of imports (an arrow never points upward)::

    foundations   mlip.errors, .atomic, .paths   standard library only; every layer may import them
    kernels       mlip.kernels                   tensor math; no atoms; no I/O but the CP factor cache
    datasets      mlip.datasets                  files to samples (HDF5, converters); no model code
    model         mlip.config, .graph, .potential, .io, ...   uses kernels
    training      mlip.train                     uses the model and datasets
    calculators   mlip.calculators               ASE / OpenMM adapters of a trained model
    applications  mlip-md (mlip.md), mlip-train (mlip.train.cli, .demo), mlip-data (mlip.datasets.cli),
                  python -m mlip.descriptors     entry points; may import any layer, calculators included

The public names below are imported lazily (PEP 562): ``import mlip.datasets`` or
``mlip.kernels`` does not pull in the model stack (e3nn, torch_geometric, vesin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import MLIPError

__version__ = "0.1.0"

if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ imports on first use
    from .config import PotentialConfig
    from .graph import atoms_to_graph, batch_graphs, build_graph
    from .io import load, save
    from .potential import Potential

_EXPORTS = {
    "Potential": "mlip.potential",
    "PotentialConfig": "mlip.config",
    "build_graph": "mlip.graph",
    "atoms_to_graph": "mlip.graph",
    "batch_graphs": "mlip.graph",
    "save": "mlip.io",
    "load": "mlip.io",
}

__all__ = ["__version__", "MLIPError", "Potential", "PotentialConfig", "build_graph", "atoms_to_graph",
           "batch_graphs", "save", "load"]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mlip' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
