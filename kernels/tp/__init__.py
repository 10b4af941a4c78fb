"""Tensor products with swappable backends: ``cg``, ``gaunt``, ``grid``, ``cp``."""

from .interface import BACKENDS, TensorProduct, register_backend
from .cg import CGBackend
from .cp import CPBackend
from .gaunt import GauntBackend
from .grid import GridBackend

for _cls in (CGBackend, GauntBackend, GridBackend, CPBackend):
    register_backend(_cls)

__all__ = ["TensorProduct", "BACKENDS", "register_backend", "CGBackend"]
