"""The typed configuration of a :class:`mlip.Potential`.

Every field has a documented default. Three fields may be left ``None`` ("take it from the
data", :data:`FROM_DATA`): a training run (``mlip-train``, whose ``model`` section *is* this
class) resolves them from its training set; a :class:`mlip.Potential` needs them set. A config
travels inside model files as a plain dict (:meth:`PotentialConfig.to_dict`), so that they load
with ``torch.load(weights_only=True)``.

Invalid values raise :class:`mlip.errors.ConfigError` (a ``ValueError``) naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ase.data import atomic_numbers as _ATOMIC_NUMBERS

from .errors import ConfigError

__all__ = ["PotentialConfig", "TP_SITES", "DTYPES", "FROM_DATA", "backend_names"]

#: Tensor-product sites of the model that ``tp_backend_overrides`` may name.
#: ``interaction``: the channelwise product of neighbour features with edge harmonics;
#: ``product``: the many-body (symmetric) product of the aggregated messages.
TP_SITES = ("interaction", "product")

#: Accepted values of ``PotentialConfig.dtype``.
DTYPES = ("float32", "float64")

#: Fields that may be ``None`` until a training run fills them from its data: the elements of
#: the training set, E0s fitted by least squares, the mean neighbour count within ``r_max``.
#: ``e0s`` may also be a string: how a training run computes them (``mlip.train.config.E0S_CHOICES``).
FROM_DATA = ("elements", "e0s", "avg_num_neighbors")


def backend_names() -> tuple[str, ...]:
    """Names of the registered tensor-product backends (:data:`mlip.kernels.tp.BACKENDS`, which
    :func:`mlip.kernels.tp.register_backend` extends), in registration order."""
    from .kernels.tp import BACKENDS

    return tuple(BACKENDS)


@dataclass
class PotentialConfig:
    """Hyperparameters of a MACE-style potential (units: Å, eV).

    Attributes:
        elements: chemical symbols the model knows, e.g. ``["H", "C", "O"]`` (default ``None``:
            must be set for a :class:`mlip.Potential`; a training run takes its data's elements).
        r_max: cutoff radius in Å (default 5.0).
        num_channels: channels C per irrep of the hidden features (default 32).
        l_max: highest degree of the hidden features and edge harmonics (default 2);
            hidden irreps are ``Cx0e + Cx1o + ... + Cx(l_max)``, natural parity.
        correlation: body order of the many-body product, 1..3 (default 3).
        num_layers: message-passing layers (default 2).
        num_radial: Bessel functions of the radial basis (default 8).
        cutoff_p: order p of the polynomial cutoff envelope (default 5, as MACE).
        radial_mlp: hidden widths of the radial MLP (default ``[64, 64, 64]``).
        readout_hidden: hidden width of the last layer's non-linear readout (default 16).
        avg_num_neighbors: messages are summed then divided by this (default 10.0; ``None``:
            a training run measures it on its data).
        tp_backend: tensor-product backend of every site, a name registered in
            :data:`mlip.kernels.tp.BACKENDS`: ``"cg"``, ``"gaunt"``, ``"grid"``, ``"cp"`` or one
            added with :func:`mlip.kernels.tp.register_backend` (default ``"cg"``).
        tp_backend_overrides: per-site backend, keys from :data:`TP_SITES`, e.g.
            ``{"interaction": "cg", "product": "grid"}`` (default: none).
        tp_options: backend options by backend name, passed to
            :class:`mlip.kernels.TensorProduct`, e.g. ``{"cp": {"rank": "full"}}``
            (default: none).
        e0s: reference energy per element symbol in eV, added to each atom's energy;
            missing elements get 0 (default: none; ``None``: a training run fits them by least
            squares on its data; a string: a training run computes them that way, see
            ``mlip.train.config.E0S_CHOICES``). See :meth:`mlip.Potential.set_e0s`.
        energy_scale: scale of the learned part of the atomic energy (default 1.0).
        energy_shift: shift of the learned part of the atomic energy in eV (default 0.0).
        dtype: ``"float32"`` or ``"float64"`` (default ``"float64"``): parameters and
            computation; inputs are cast to it.
        seed: seed of the weight initialisation (default 0); the global RNG is not used.
    """

    elements: Optional[list[str]] = None
    r_max: float = 5.0
    num_channels: int = 32
    l_max: int = 2
    correlation: int = 3
    num_layers: int = 2
    num_radial: int = 8
    cutoff_p: int = 5
    radial_mlp: list[int] = field(default_factory=lambda: [64, 64, 64])
    readout_hidden: int = 16
    avg_num_neighbors: Optional[float] = 10.0
    tp_backend: str = "cg"
    tp_backend_overrides: dict[str, str] = field(default_factory=dict)
    tp_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    e0s: Union[None, str, dict[str, float]] = field(default_factory=dict)
    energy_scale: float = 1.0
    energy_shift: float = 0.0
    dtype: str = "float64"
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~mlip.errors.ConfigError` naming the first invalid field."""
        if self.elements is not None:
            if isinstance(self.elements, str) or not self.elements:
                raise ConfigError(f"elements: expected a non-empty list of chemical symbols, got {self.elements!r}")
            self.elements = [str(e) for e in self.elements]
            bad = [e for e in self.elements if e not in _ATOMIC_NUMBERS or e == "X"]
            if bad:
                raise ConfigError(f"elements: unknown chemical symbol(s) {bad}")
            if len(set(self.elements)) != len(self.elements):
                raise ConfigError(f"elements: duplicates in {self.elements}")
        if not self.r_max > 0:
            raise ConfigError(f"r_max: expected a positive cutoff in Å, got {self.r_max}")
        for name, lo in (("num_channels", 1), ("l_max", 0), ("correlation", 1), ("num_layers", 1),
                         ("num_radial", 1), ("cutoff_p", 2), ("readout_hidden", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"{name}: expected an integer >= {lo}, got {v!r}")
        self.radial_mlp = [int(w) for w in self.radial_mlp]
        if any(w < 1 for w in self.radial_mlp):
            raise ConfigError(f"radial_mlp: widths must be positive, got {self.radial_mlp}")
        if self.avg_num_neighbors is not None and not self.avg_num_neighbors > 0:
            raise ConfigError(f"avg_num_neighbors: expected > 0 (or None: from the data), got {self.avg_num_neighbors}")
        backends = backend_names()
        if self.tp_backend not in backends:
            raise ConfigError(f"tp_backend: expected one of {backends}, got {self.tp_backend!r}")
        for site, backend in self.tp_backend_overrides.items():
            if site not in TP_SITES:
                raise ConfigError(f"tp_backend_overrides: unknown site {site!r}; sites are {TP_SITES}")
            if backend not in backends:
                raise ConfigError(f"tp_backend_overrides[{site!r}]: expected one of {backends}, got {backend!r}")
        for backend, opts in self.tp_options.items():
            if backend not in backends or not isinstance(opts, dict):
                raise ConfigError(f"tp_options: expected {{backend: {{option: value}}}} with backends {backends}, "
                                  f"got {backend!r}: {opts!r}")
        if self.e0s is not None and not isinstance(self.e0s, str):  # a string: for a training run to resolve
            unknown = [e for e in self.e0s if self.elements is not None and e not in self.elements]
            if unknown:
                raise ConfigError(f"e0s: element(s) {unknown} not in elements {self.elements}")
            self.e0s = {str(k): float(v) for k, v in self.e0s.items()}
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: expected one of {DTYPES}, got {self.dtype!r}")

    def unresolved(self) -> list[str]:
        """Fields of :data:`FROM_DATA` still ``None`` (a :class:`mlip.Potential` needs none)."""
        return [name for name in FROM_DATA
                if getattr(self, name) is None or (name == "e0s" and isinstance(self.e0s, str))]

    def backend(self, site: str) -> str:
        """Backend used at tensor-product ``site`` (one of :data:`TP_SITES`)."""
        return self.tp_backend_overrides.get(site, self.tp_backend)

    def options(self, site: str) -> dict[str, Any]:
        """Backend options for ``site``."""
        return dict(self.tp_options.get(self.backend(site), {}))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (str, int, float, list, dict only): safe for ``torch.load(weights_only=True)``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PotentialConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - names)
        if extra:
            raise ConfigError(f"unknown PotentialConfig field(s) {extra}")
        return cls(**d)
