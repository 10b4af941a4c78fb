"""Operator families beyond tensor products (pure tensor math: no atoms, no I/O).

One module per family, exported as a module and never flattened into this namespace, so
each name keeps its family (``eml.evaluate_eml_tree``, ``turboquant.TurboQuantMSE``)::

    from mlip.kernels.operators import turboquant
    q = turboquant.TurboQuantMSE(dim=64, bits=4)

or ``from mlip.kernels.operators.turboquant import TurboQuantMSE``. ``krylov_recycling``
needs scipy, the optional extra ``krylov`` (``pip install 'mlip[krylov]'``); it is imported
only when a solver runs.

========================  ====================================================
``turboquant``            online vector quantisation (Zandieh et al. 2025)
``spectral_conv``         Fourier spectral convolution (FNO, Li et al. 2021)
``deeponet``              branch/trunk operator networks (Lu et al. 2021)
``multigrid``             multigrid V-cycle operator (MgNO, He et al. 2024)
``lowrank_mixing``        low-rank separable mixing (LordNet, Huang et al. 2022)
``quadratic``             quadratic neurons, ReLinear (Fan et al. 2021)
``generalized_conv``      kernel / distance convolutions (Kervolution, AdderNet)
``delta``                 delta activations (Neil et al. 2017)
``evonorm``               EvoNorm B0 / S0 (Liu et al. 2020)
``eml``                   exp-minus-log operator and its trees (Odrzywolek 2026)
``proximal``              learned proximal networks (Fang et al. 2024)
``htsr``                  heavy-tailed self-regularisation alpha (Martin & Mahoney)
``orthoreg``              orthogonality of fine-tuning updates (Liu et al. 2026)
``krylov_recycling``      sorted Krylov recycling, GCRO-DR (SKR, Wang et al. 2024)
========================  ====================================================
"""

from . import (
    deeponet,
    delta,
    eml,
    evonorm,
    generalized_conv,
    htsr,
    krylov_recycling,
    lowrank_mixing,
    multigrid,
    orthoreg,
    proximal,
    quadratic,
    spectral_conv,
    turboquant,
)

__all__ = [
    "turboquant",
    "spectral_conv",
    "deeponet",
    "multigrid",
    "lowrank_mixing",
    "quadratic",
    "generalized_conv",
    "delta",
    "evonorm",
    "eml",
    "proximal",
    "htsr",
    "orthoreg",
    "krylov_recycling",
]
