"""mlip: equivariant machine-learning interatomic potentials with swappable tensor-product backends."""

__version__ = "0.1.0"
