"""Tensor products with swappable backends: ``cg``, ``gaunt``, ``grid``, ``cp``, each run by
an engine (``torch``; ``cuequivariance`` for ``cg``), see :mod:`mlip.kernels.tp.engines`.

:data:`BACKENDS` is the registry (name -> backend class); :func:`register_backend` adds one.
:func:`many_body_product` builds the many-body product a backend uses.
"""

from .base import second_order, under_this_order
from .cg import CGBackend
from .cp import CPBackend
from .engines import ENGINES, set_engine
from .gaunt import GauntBackend
from .grid import GridBackend
from .interface import BACKENDS, TensorProduct, backend_options, register_backend
from .many_body import many_body_product

for _cls in (CGBackend, GauntBackend, GridBackend, CPBackend):
    register_backend(_cls)

__all__ = ["TensorProduct", "BACKENDS", "register_backend", "backend_options", "CGBackend", "ENGINES",
           "set_engine", "many_body_product", "second_order",
           "under_this_order"]
