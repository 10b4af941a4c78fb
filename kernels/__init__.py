"""mlip.kernels: pure tensor math (irreps helpers, tensor-product backends, operators).

No atoms and no I/O live here; nothing in this package imports from the rest of mlip.
"""

from .tp import BACKENDS, TensorProduct

__all__ = ["TensorProduct", "BACKENDS"]
