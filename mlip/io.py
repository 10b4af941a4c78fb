"""Model files: ``mlip.save(model, path)`` / ``mlip.load(path)``.

A model file is a ``torch.save`` of a plain dict, loadable with
``torch.load(path, weights_only=True)``::

    {"format": "mlip.potential", "format_version": 1,
     "config": PotentialConfig.to_dict(),          # plain str / int / float / list / dict
     "state_dict": {name: tensor},                 # in the model's dtype
     "metadata": {"elements": [...], "e0s": {symbol: eV}, "r_max": Å, "dtype": "float64",
                  "units": {"energy": "eV", "length": "Å", ...},
                  "mlip_version": ..., "torch_version": ..., "e3nn_version": ...}}

Files are written atomically (:func:`mlip.atomic.atomic_path`), so a crash never leaves a
half-written model. The payload dict is built by :func:`to_payload` and read back by
:func:`from_payload`, which checks format and version: model files and pickled OpenMM forces
(:mod:`mlip.calculators.openmm`) go through the same two functions. A payload or file that cannot
be used raises :class:`mlip.errors.CheckpointError` (a ``ValueError``) naming its source.

Files are untrusted bytes: they are read only with ``weights_only=True``
(:func:`read_plain_file`), and a file whose loading would run code (a pickle that calls
functions) is refused with a message that says so. No message mlip gives suggests
``weights_only=False``. Files are created with the permissions the user's umask allows, as
``open`` does.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from .atomic import atomic_path
from .config import PotentialConfig
from .errors import CheckpointError, ConfigError
from .potential import Potential

__all__ = ["save", "load", "to_payload", "from_payload", "atomic_torch_save", "read_plain_file", "resolve_model",
           "FORMAT", "FORMAT_VERSION", "UNITS"]

FORMAT = "mlip.potential"
FORMAT_VERSION = 1
#: Units of everything a model reads and returns.
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3"}


def to_payload(model: Potential, *, extra: dict | None = None) -> dict:
    """The plain dict a model file holds (see the module docstring): config, state dict (on
    the CPU) and metadata. :func:`save` writes it; the OpenMM force pickles it."""
    if not isinstance(model, Potential):
        raise TypeError(f"save: expected an mlip.Potential, got {type(model).__name__}")
    import e3nn

    from . import __version__

    config = model.config.to_dict()
    config["e0s"] = model.e0s()
    return {
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


def save(model: Potential, path, *, extra: dict | None = None) -> Path:
    """Write ``model`` (config, state dict, metadata) to ``path`` atomically; returns the path.

    ``extra``: optional plain (str/int/float/list/dict) metadata to store alongside.
    """
    return atomic_torch_save(to_payload(model, extra=extra), path)


def atomic_torch_save(obj, path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`mlip.atomic.atomic_path`): a crash
    (even SIGKILL) leaves the old file or the new one, never a half-written one."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    return path


#: Sentences of torch.load's errors that must not reach a user: they suggest loading untrusted
#: bytes with ``weights_only=False`` (or allow-listing their globals), which would run their code.
_UNSAFE_ADVICE = re.compile(r"weights_only|safe_globals|trusted source|allowlist|allow-list|file an issue",
                            re.IGNORECASE)


def _torch_error_text(exc: BaseException) -> str:
    """``exc``'s message without torch's advice to load with ``weights_only=False``."""
    parts = re.split(r"(?<=[.!?])\s+|\n+", str(exc))
    kept = [p.strip() for p in parts if p.strip() and not _UNSAFE_ADVICE.search(p)]
    return " ".join(kept) or type(exc).__name__


def read_plain_file(path, *, unreadable: str = "not a readable mlip model file"):
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain data only.

    Args:
        unreadable: what the error calls a file torch cannot read, after ``"<path>: "``.

    Raises:
        CheckpointError: a file whose loading would run code (a pickle of functions or class
            instances: refused, never loaded), or a file torch cannot read (truncated,
            corrupted, not a torch file). The message names the file and never suggests
            ``weights_only=False``.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "GLOBAL" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f"it calls {found.group(1)}" if found else "it holds pickled Python objects"
            raise CheckpointError(f"{path}: refused: loading this file would run code ({what}); mlip model files "
                                  "and checkpoints hold only tensors and plain data, so it was not loaded") from None
        raise CheckpointError(f"{path}: {unreadable} ({_torch_error_text(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise CheckpointError(f"{path}: {unreadable} ({type(exc).__name__}: {_torch_error_text(exc)})") from None


def from_payload(payload, *, source: str = "model payload", dtype: str | torch.dtype | None = None) -> Potential:
    """The :class:`Potential` (CPU, eval mode) of a model-file payload (:func:`to_payload`).

    ``source`` names where the payload came from (a file path) in error messages; ``dtype``
    overrides the stored one. Raises :class:`~mlip.errors.CheckpointError` for a payload that
    is not an mlip model, has an unsupported format version, or whose state dict does not
    match its config.
    """
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not an mlip model file (format "
                              f"{payload.get('format') if isinstance(payload, dict) else None!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{source}: model format version {payload.get('format_version')} is not supported "
                              f"(this mlip reads version {FORMAT_VERSION})")
    try:
        config = PotentialConfig.from_dict(payload["config"])
        if dtype is not None:
            config.dtype = {torch.float32: "float32", torch.float64: "float64"}.get(dtype, dtype)
            config.validate()
    except KeyError as exc:
        raise CheckpointError(f"{source}: model payload lacks {exc}") from None
    model = Potential(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{source}: state dict does not match its config ({exc})") from None
    return model.eval()


_DTYPES = {"float32": torch.float32, "float64": torch.float64,
           torch.float32: torch.float32, torch.float64: torch.float64}


def resolve_model(model_or_path, *, device="cpu", dtype=None) -> Potential:
    """A ``Potential`` on ``device`` in ``dtype`` (default: its own) from a model or a model file;
    a passed model is copied only if it must change device or dtype."""
    import copy

    if dtype is not None and dtype not in _DTYPES:
        raise ConfigError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
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
    Raises :class:`~mlip.errors.CheckpointError` (a ``ValueError``) naming the file if it is not
    a readable mlip model file, and ``FileNotFoundError`` if there is no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    payload = read_plain_file(path)
    return from_payload(payload, source=str(path), dtype=dtype).to(device)
