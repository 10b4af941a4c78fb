"""mlip: equivariant machine-learning interatomic potentials with swappable tensor-product backends."""

__version__ = "0.1.0"

# Public API, imported lazily (PEP 562) so that ``import mlip.datasets`` or ``mlip.kernels``
# does not pull in the model stack (e3nn, torch_geometric, vesin).
_EXPORTS = {
    "Potential": "mlip.potential",
    "PotentialConfig": "mlip.config",
    "build_graph": "mlip.graph",
    "atoms_to_graph": "mlip.graph",
    "batch_graphs": "mlip.graph",
    "save": "mlip.io",
    "load": "mlip.io",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mlip' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
