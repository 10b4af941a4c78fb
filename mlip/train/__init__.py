"""mlip.train: train, evaluate and export potentials from the HDF5 datasets.

Public API:

* :func:`fit` - a training run from a :class:`Config` (``mlip-train fit``).
* :func:`load_config`, :class:`Config` and its sections - the typed YAML configuration.
* :func:`evaluate_dataset`, :func:`format_table` - metrics of a model on data (``mlip-train eval``).
* :func:`export_checkpoint`, :func:`model_from_checkpoint` - checkpoint to model file (``mlip-train export``).
* :func:`load_checkpoint`, :class:`CheckpointError`; :class:`ConfigError`, :class:`DataError`,
  :class:`RunExistsError` - every bad-input error is a ``ValueError``.

Units: eV, Å, eV/Å, eV/Å^3; reported metrics in meV/atom, meV/Å, meV/Å^3.
"""

from .checkpoint import CheckpointError, load_checkpoint
from .config import (Config, ConfigError, DataConfig, FinetuneConfig, LossConfig, ModelConfig, OptimConfig, ScheduleConfig,
                     TrainConfig, load_config)
from .data import DataError
from .evaluate import evaluate_dataset, format_table
from .export import export_checkpoint, model_from_checkpoint
from .trainer import FitResult, RunExistsError, fit

__all__ = [
    "CheckpointError", "Config", "ConfigError", "DataConfig", "DataError", "FinetuneConfig", "FitResult", "LossConfig",
    "ModelConfig",
    "OptimConfig", "RunExistsError", "ScheduleConfig", "TrainConfig", "evaluate_dataset", "export_checkpoint",
    "fit", "format_table", "load_checkpoint", "load_config", "model_from_checkpoint",
]
