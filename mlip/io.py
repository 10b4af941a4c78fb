"""Model files: ``mlip.save(model, path)`` / ``mlip.load(path)``.

A model file is a ``torch.save`` of a plain dict, loadable with
``torch.load(path, weights_only=True)``::

    {"format": "mlip.potential", "format_version": 1,
     "config": PotentialConfig.to_dict(),          # plain str / int / float / list / dict
     "state_dict": {name: tensor},                 # in the model's dtype
     "metadata": {"elements": [...], "e0s": {symbol: eV}, "r_max": Å, "dtype": "float64",
                  "units": {"energy": "eV", "length": "Å", ...},
                  "mlip_version": ..., "torch_version": ..., "e3nn_version": ...}}

Files are written to a temporary file in the target folder and renamed (``os.replace``),
so a crash never leaves a half-written model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .config import PotentialConfig
from .potential import Potential

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION", "UNITS"]

FORMAT = "mlip.potential"
FORMAT_VERSION = 1
#: Units of everything a model reads and returns.
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3"}


def save(model: Potential, path, *, extra: dict | None = None) -> Path:
    """Write ``model`` (config, state dict, metadata) to ``path`` atomically; returns the path.

    ``extra``: optional plain (str/int/float/list/dict) metadata to store alongside.
    """
    if not isinstance(model, Potential):
        raise TypeError(f"save: expected an mlip.Potential, got {type(model).__name__}")
    import e3nn

    from . import __version__

    path = Path(path)
    config = model.config.to_dict()
    config["e0s"] = model.e0s()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": {
            "elements": list(model.elements),
            "e0s": model.e0s(),
            "r_max": model.r_max,
            "dtype": model.config.dtype,
            "units": dict(UNITS),
            "mlip_version": str(__version__),
            "torch_version": str(torch.__version__),
            "e3nn_version": str(e3nn.__version__),
            "extra": dict(extra or {}),
        },
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(obj, path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: write a temporary file in the same folder,
    fsync it, then ``os.replace`` — a crash (even SIGKILL) leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


_DTYPES = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32, torch.float64: torch.float64}


def resolve_model(model_or_path, *, device="cpu", dtype=None) -> Potential:
    """A ``Potential`` on ``device`` in ``dtype`` (default: its own) from a model or a model file;
    a passed model is copied only if it must change device or dtype."""
    import copy

    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    if isinstance(model_or_path, Potential):
        model = model_or_path
        want = _DTYPES[dtype] if dtype is not None else model.dtype
        if want != model.dtype or torch.device(device) != model.e0.device:
            model = copy.deepcopy(model).to(device=device, dtype=want)
        return model
    if isinstance(model_or_path, (str, Path)):
        return load(model_or_path, device=device, dtype=dtype)
    raise TypeError(f"model_or_path: expected an mlip.Potential or a path, got {type(model_or_path).__name__}")


def load(path, *, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None) -> Potential:
    """Read a model written by :func:`save` (``weights_only=True``) in eval mode.

    ``dtype``: ``"float32"``/``"float64"`` (or a torch dtype) to override the stored one.
    Raises ``ValueError`` naming the file if it is not an mlip model file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable mlip model file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not an mlip model file (format {payload.get('format') if isinstance(payload, dict) else None!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: model format version {payload.get('format_version')} is not supported "
                         f"(this mlip reads version {FORMAT_VERSION})")
    config = PotentialConfig.from_dict(payload["config"])
    if dtype is not None:
        config.dtype = {torch.float32: "float32", torch.float64: "float64"}.get(dtype, dtype)
        config.validate()
    model = Potential(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: state dict does not match its config ({exc})") from None
    return model.to(device).eval()
