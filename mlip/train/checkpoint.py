"""Training checkpoints: everything a run needs to continue bit for bit.

A checkpoint is a ``torch.save`` of a plain dict, loaded with ``weights_only=True``::

    {"format": "mlip.train.checkpoint", "format_version": 1, "mlip_version": ...,
     "config": Config as a dict, "model_config": PotentialConfig as a dict,
     "step": int, "elapsed_s": float,
     "model": state dict, "optimizer": state dict, "schedule": state dict,
     "ema": state dict or None, "rng": {"torch", "numpy", "python", "cuda"},
     "data": [stream position of each rank], "best": {"loss", "step", "bad"},
     "metrics": last validation metrics}

Files are written to a temporary file in the same folder, flushed to disk and renamed
(``os.replace``): a crash (even SIGKILL) leaves either the old or the new checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from mlip.errors import CheckpointError

__all__ = ["FORMAT", "FORMAT_VERSION", "save_checkpoint", "load_checkpoint",
           "rng_state", "set_rng_state"]

FORMAT = "mlip.train.checkpoint"
FORMAT_VERSION = 1


def rng_state() -> dict:
    """The torch, numpy, Python (and CUDA) RNG states as weights-only-safe values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(payload: dict, path) -> Path:
    """Write ``payload`` (without the format keys) to ``path`` atomically; returns the path."""
    from mlip import __version__
    from mlip.io import atomic_torch_save

    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "mlip_version": str(__version__), **payload}
    return atomic_torch_save(full, path)


_REQUIRED = ("config", "model_config", "step", "model", "optimizer", "schedule", "ema", "rng", "data", "best")


def load_checkpoint(path) -> dict:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: corrupted or truncated file, a file whose loading would run code
            (refused, see :func:`mlip.io.read_plain_file`), not an mlip training checkpoint, or a
            format version this mlip does not read.
    """
    from mlip.io import read_plain_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    payload = read_plain_file(path, unreadable="corrupted or unreadable checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        hint = (" (a model file, what mlip-train export and mlip.save write; a training checkpoint is "
                "checkpoints/last.pt or checkpoints/best.pt of a run folder)") if what == "mlip.potential" else ""
        raise CheckpointError(f"{path}: not an mlip training checkpoint (format {what!r}){hint}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')!r} (written by mlip "
            f"{payload.get('mlip_version')}) is incompatible; this mlip reads version {FORMAT_VERSION}")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return payload
