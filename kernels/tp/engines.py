"""Engines: how a backend's product is executed on a device, chosen at run time.

A *backend* (``cg``, ``gaunt``, ``grid``, ``cp``) decides the paths, the weights and the
numbers; an *engine* runs them: ``torch`` (mlip's own code, every backend) or
``cuequivariance`` (NVIDIA's cuEquivariance kernels, for the backends that declare it).
An engine never changes the weights or the numbers beyond rounding, so it is not part of
a model's architecture: :func:`set_engine` switches a built model in place.

``auto`` (the default) picks ``cuequivariance`` for CUDA tensors when the backend has it and
``cuequivariance_torch`` with its CUDA ops is importable, ``torch`` otherwise; it is decided
per call from the device of the inputs.
"""

from __future__ import annotations

import torch

from mlip.errors import ConfigError

from . import cueq

__all__ = ["ENGINES", "EngineSwitch", "set_engine", "check_engine_name", "resolve_engine"]

#: every engine name a caller may ask for
ENGINES = ("auto", "torch", "cuequivariance")


def check_engine_name(engine) -> str:
    """``engine`` if it is one of :data:`ENGINES`, else :class:`~mlip.errors.ConfigError`."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; engines: {list(ENGINES)}")
    return engine


def resolve_engine(engine: str, device: torch.device, engines) -> str:
    """The engine that runs on ``device``: ``engine`` itself, or for ``auto``
    ``cuequivariance`` on CUDA where ``engines`` has it and its CUDA ops import, else ``torch``."""
    if engine != "auto":
        return engine
    if device.type == "cuda" and "cuequivariance" in engines and cueq.cuda_ops_available():
        return "cuequivariance"
    return "torch"


class EngineSwitch:
    """Mixin of the kernel modules whose engine can be switched (a ``torch.nn.Module``).

    Subclasses set :attr:`engine_owner` (a name for error messages, e.g. ``"tensor-product
    backend 'grid'"``) and :attr:`engines` (the engines they run on besides ``auto``), and may
    override :meth:`_set_engine` to forward the choice to their parts.
    """

    engines: tuple = ("torch",)
    engine_owner: str = "module"
    _engine: str = "auto"

    @property
    def engine(self) -> str:
        """The engine asked for: ``"auto"``, ``"torch"`` or ``"cuequivariance"``."""
        return self._engine

    @engine.setter
    def engine(self, name: str) -> None:
        self.check_engine(name)
        self._set_engine(name)

    def check_engine(self, name: str) -> None:
        """:class:`~mlip.errors.ConfigError` unless this module can run on engine ``name``
        (naming the module's backend and the engines it has); for ``cuequivariance`` also
        unless the package is installed."""
        check_engine_name(name)
        if name != "auto" and name not in self.engines:
            raise ConfigError(f"{self.engine_owner} has no engine {name!r}; its engines: "
                              f"{['auto', *self.engines]}")
        if name == "cuequivariance":
            cueq.require()

    def _set_engine(self, name: str) -> None:
        self._engine = name


def set_engine(module: torch.nn.Module, name: str) -> torch.nn.Module:
    """Switch every kernel module inside ``module`` to engine ``name`` (in place; returns
    ``module``). All are checked first, so a refused engine leaves nothing switched:
    :class:`~mlip.errors.ConfigError` naming the first module's backend that lacks it."""
    check_engine_name(name)
    targets = [m for m in module.modules() if isinstance(m, EngineSwitch)]
    for m in targets:
        m.check_engine(name)
    for m in targets:
        m.engine = name
    return module
