"""mlip.kernels: pure tensor math (irreps helpers, tensor-product backends, operators).

The layer's rules, as they hold:

* No atoms: nothing here knows about structures, neighbour lists or models; the model
  asks this package for every product it needs.
* No I/O, with one exception: the ``cp`` backend caches its CP factors under the user cache
  directory (``$MLIP_CACHE_DIR/cp``, else the platform's user cache dir), written
  atomically; a cache that cannot be written is not an error (the factors are recomputed).
* Imports: nothing from the rest of mlip except the standard-library-only foundations
  :mod:`mlip.errors` (the error classes it raises), :mod:`mlip.atomic` (the cache write) and
  :mod:`mlip.paths` (where the cache is).
* Backends: :data:`BACKENDS` is the registry (``mlip.kernels.tp.register_backend``); every
  list of backends is read from it. A backend's many-body product comes from
  :func:`many_body_product`, so the model never branches on backend names.
* Engines (:data:`ENGINES`): ``torch`` runs every backend; ``cuequivariance`` (optional
  package, extra ``mlip[cuda]``) runs ``cg``. Chosen at run time, never stored in a model:
  :func:`set_engine` switches every kernel module inside a model (tensor products, many-body
  products, :class:`ElementLinear`).
* Speed hints never change a number: :func:`second_order` tells kernels that derivatives of
  gradients will be taken (the potential sets it when it keeps the graph of its forces), so
  a kernel with a written-out first-order backward may keep an autograd graph instead;
  code that recomputes later (checkpointing) binds the hint with :func:`under_this_order`.
"""

from .linear import ElementLinear
from .tp import BACKENDS, ENGINES, TensorProduct, many_body_product, second_order, set_engine, under_this_order

__all__ = ["TensorProduct", "BACKENDS", "ENGINES", "many_body_product", "second_order", "set_engine", "ElementLinear",
           "under_this_order"]
