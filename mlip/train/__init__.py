"""mlip.train: train, evaluate and export potentials from the HDF5 datasets.

Public API:

* :func:`fit` - a training run from a :class:`Config` (``mlip-train fit``).
* :func:`load_config`, :class:`Config` and its sections - the typed YAML configuration; its
  ``model`` section is a :class:`mlip.PotentialConfig` (:func:`model_config`).
* :func:`evaluate_dataset`, :func:`format_table` - metrics of a model on data (``mlip-train eval``).
* :func:`export_checkpoint`, :func:`model_from_checkpoint` - checkpoint to model file (``mlip-train export``).
* :func:`load_checkpoint`; the errors of :mod:`mlip.errors` that bad input raises here:
  :class:`~mlip.errors.ConfigError`, :class:`~mlip.errors.DataError`,
  :class:`~mlip.errors.CheckpointError`, :class:`~mlip.errors.OutputExistsError` (a run folder
  that already holds a run) - every one a ``ValueError``.

Units: eV, Å, eV/Å, eV/Å^3; reported metrics in meV/atom, meV/Å, meV/Å^3.

The public names are imported lazily (PEP 562), so that ``mlip-train --help`` and argument
errors do not pay for torch_geometric, e3nn and the model stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlip.errors import CheckpointError, ConfigError, DataError, OutputExistsError

if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ imports on first use
    from .checkpoint import load_checkpoint
    from .config import (
        Config,
        DataConfig,
        FinetuneConfig,
        LossConfig,
        OptimConfig,
        ScheduleConfig,
        TrainConfig,
        load_config,
        model_config,
    )
    from .evaluate import evaluate_dataset, format_table
    from .export import export_checkpoint, model_from_checkpoint
    from .trainer import FitResult, fit

_EXPORTS = {
    "load_checkpoint": "checkpoint",
    **dict.fromkeys(("Config", "DataConfig", "FinetuneConfig", "LossConfig", "OptimConfig", "ScheduleConfig",
                     "TrainConfig", "load_config", "model_config"), "config"),
    "evaluate_dataset": "evaluate", "format_table": "evaluate",
    "export_checkpoint": "export", "model_from_checkpoint": "export",
    "FitResult": "trainer", "fit": "trainer",
}

__all__ = [
    "CheckpointError", "Config", "ConfigError", "DataConfig", "DataError", "FinetuneConfig", "FitResult", "LossConfig",
    "OptimConfig", "OutputExistsError", "ScheduleConfig", "TrainConfig", "evaluate_dataset", "export_checkpoint",
    "fit", "format_table", "load_checkpoint", "load_config", "model_config", "model_from_checkpoint",
]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
