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
"""

from mlip.errors import CheckpointError, ConfigError, DataError, OutputExistsError

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

__all__ = [
    "CheckpointError", "Config", "ConfigError", "DataConfig", "DataError", "FinetuneConfig", "FitResult", "LossConfig",
    "OptimConfig", "OutputExistsError", "ScheduleConfig", "TrainConfig", "evaluate_dataset", "export_checkpoint",
    "fit", "format_table", "load_checkpoint", "load_config", "model_config", "model_from_checkpoint",
]
