"""The typed configuration of a :class:`mlip.Potential`.

Every field but ``elements`` has a documented default. A config travels inside model
files as a plain dict (:meth:`PotentialConfig.to_dict`), so that they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ase.data import atomic_numbers as _ATOMIC_NUMBERS

__all__ = ["PotentialConfig", "TP_SITES", "DTYPES"]

#: Tensor-product sites of the model that ``tp_backend_overrides`` may name.
#: ``interaction``: the channelwise product of neighbour features with edge harmonics;
#: ``product``: the many-body (symmetric) product of the aggregated messages.
TP_SITES = ("interaction", "product")

#: Accepted values of ``PotentialConfig.dtype``.
DTYPES = ("float32", "float64")

_BACKENDS = ("cg", "gaunt", "grid", "cp")


@dataclass
class PotentialConfig:
    """Hyperparameters of a MACE-style potential (units: Å, eV).

    Attributes:
        elements: chemical symbols the model knows, e.g. ``["H", "C", "O"]`` (no default).
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
        avg_num_neighbors: messages are summed then divided by this (default 10.0).
        tp_backend: tensor-product backend of every site: ``"cg"``, ``"gaunt"``, ``"grid"``
            or ``"cp"`` (default ``"cg"``).
        tp_backend_overrides: per-site backend, keys from :data:`TP_SITES`, e.g.
            ``{"interaction": "cg", "product": "grid"}`` (default: none).
        tp_options: backend options by backend name, passed to
            :class:`mlip.kernels.TensorProduct`, e.g. ``{"cp": {"rank": "full"}}``
            (default: none).
        e0s: reference energy per element symbol in eV, added to each atom's energy;
            missing elements get 0 (default: none). See :meth:`mlip.Potential.set_e0s`.
        energy_scale: scale of the learned part of the atomic energy (default 1.0).
        energy_shift: shift of the learned part of the atomic energy in eV (default 0.0).
        dtype: ``"float32"`` or ``"float64"`` (default ``"float64"``): parameters and
            computation; inputs are cast to it.
        seed: seed of the weight initialisation (default 0); the global RNG is not used.
    """

    elements: list[str]
    r_max: float = 5.0
    num_channels: int = 32
    l_max: int = 2
    correlation: int = 3
    num_layers: int = 2
    num_radial: int = 8
    cutoff_p: int = 5
    radial_mlp: list[int] = field(default_factory=lambda: [64, 64, 64])
    readout_hidden: int = 16
    avg_num_neighbors: float = 10.0
    tp_backend: str = "cg"
    tp_backend_overrides: dict[str, str] = field(default_factory=dict)
    tp_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    e0s: dict[str, float] = field(default_factory=dict)
    energy_scale: float = 1.0
    energy_shift: float = 0.0
    dtype: str = "float64"
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if isinstance(self.elements, str) or not self.elements:
            raise ValueError(f"elements: expected a non-empty list of chemical symbols, got {self.elements!r}")
        self.elements = [str(e) for e in self.elements]
        bad = [e for e in self.elements if e not in _ATOMIC_NUMBERS or e == "X"]
        if bad:
            raise ValueError(f"elements: unknown chemical symbol(s) {bad}")
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"elements: duplicates in {self.elements}")
        if not self.r_max > 0:
            raise ValueError(f"r_max: expected a positive cutoff in Å, got {self.r_max}")
        for name, lo in (("num_channels", 1), ("l_max", 0), ("correlation", 1), ("num_layers", 1),
                         ("num_radial", 1), ("cutoff_p", 2), ("readout_hidden", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name}: expected an integer >= {lo}, got {v!r}")
        self.radial_mlp = [int(w) for w in self.radial_mlp]
        if any(w < 1 for w in self.radial_mlp):
            raise ValueError(f"radial_mlp: widths must be positive, got {self.radial_mlp}")
        if not self.avg_num_neighbors > 0:
            raise ValueError(f"avg_num_neighbors: expected > 0, got {self.avg_num_neighbors}")
        if self.tp_backend not in _BACKENDS:
            raise ValueError(f"tp_backend: expected one of {_BACKENDS}, got {self.tp_backend!r}")
        for site, backend in self.tp_backend_overrides.items():
            if site not in TP_SITES:
                raise ValueError(f"tp_backend_overrides: unknown site {site!r}; sites are {TP_SITES}")
            if backend not in _BACKENDS:
                raise ValueError(f"tp_backend_overrides[{site!r}]: expected one of {_BACKENDS}, got {backend!r}")
        for backend, opts in self.tp_options.items():
            if backend not in _BACKENDS or not isinstance(opts, dict):
                raise ValueError(f"tp_options: expected {{backend: {{option: value}}}} with backends {_BACKENDS}, got {backend!r}: {opts!r}")
        unknown = [e for e in self.e0s if e not in self.elements]
        if unknown:
            raise ValueError(f"e0s: element(s) {unknown} not in elements {self.elements}")
        self.e0s = {str(k): float(v) for k, v in self.e0s.items()}
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {self.dtype!r}")

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
            raise ValueError(f"unknown PotentialConfig field(s) {extra}")
        return cls(**d)
