"""Checkpoint -> deployable model file (what :func:`mlip.save` writes and ``mlip.load``,
``MLIPCalculator``, ``mlip-md`` and the OpenMM force read)."""

from __future__ import annotations

from pathlib import Path

import mlip
from mlip.errors import CheckpointError, OutputExistsError

from .checkpoint import load_checkpoint

__all__ = ["export_checkpoint", "model_from_checkpoint"]


def model_from_checkpoint(path, *, weights: str = "ema") -> mlip.Potential:
    """The potential stored in a training checkpoint, in eval mode.

    ``weights``: ``ema`` (the moving average, when the run kept one) or ``raw`` (the
    optimizer's current weights).

    Raises:
        CheckpointError: unreadable or incompatible checkpoint, or weights that do not fit.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights: expected 'ema' or 'raw', got {weights!r}")
    ck = load_checkpoint(path)
    try:
        model = mlip.Potential(mlip.PotentialConfig.from_dict(ck["model_config"]))
        model.load_state_dict(ck["model"])
        if weights == "ema" and ck.get("ema"):
            model.load_state_dict(ck["ema"]["shadow"], strict=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: model weights do not match the stored model config ({exc})") from None
    return model.eval()


def export_checkpoint(path, out, *, weights: str = "ema", overwrite: bool = False) -> Path:
    """Write the model of checkpoint ``path`` to ``out`` with :func:`mlip.save` (atomically).

    The file's metadata ``extra`` records the source checkpoint, its step, which weights
    (``ema`` or ``raw``; ``raw`` when the run kept no moving average) and validation metrics.

    Raises:
        CheckpointError: ``path`` is not a usable training checkpoint.
        OutputExistsError: ``out`` exists and ``overwrite`` is false (checked after the checkpoint).
    """
    ck = load_checkpoint(path)
    if Path(out).exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; it is replaced only with --overwrite (overwrite=True), "
                                "or choose another -o")
    model = model_from_checkpoint(path, weights=weights)
    if weights == "ema" and not ck.get("ema"):
        weights = "raw"
    extra = {"checkpoint": str(Path(path)), "step": int(ck["step"]), "weights": weights,
             "val_metrics": {k: float(v) for k, v in (ck.get("metrics") or {}).items()}}
    return mlip.save(model, out, extra=extra)
