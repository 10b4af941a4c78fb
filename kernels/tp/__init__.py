"""Tensor products with swappable backends: ``cg``, ``gaunt``, ``grid``, ``cp``.

:data:`BACKENDS` is the registry (name -> backend class); :func:`register_backend` adds one.
"""

from .cg import CGBackend
from .cp import CPBackend
from .gaunt import GauntBackend
from .grid import GridBackend
from .interface import BACKENDS, TensorProduct, backend_options, register_backend

for _cls in (CGBackend, GauntBackend, GridBackend, CPBackend):
    register_backend(_cls)

__all__ = ["TensorProduct", "BACKENDS", "register_backend", "backend_options", "CGBackend"]
