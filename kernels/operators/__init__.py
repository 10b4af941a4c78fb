"""Operator families beyond tensor products (pure tensor math: no atoms, no I/O).

One module per family:

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

from .deeponet import DeepONet, mlp
from .delta import DeltaActivation, delta_accumulate, fixed_point_quantize
from .eml import EML, Const, EMLExpr, Var, eml, eml_e, eml_exp, eml_ln, eml_sub, eml_zero, evaluate
from .evonorm import EvoNormB0, EvoNormS0
from .generalized_conv import GeneralizedConv2d
from .htsr import HTSRFit, htsr_alpha, htsr_report, power_law_fit
from .krylov_recycling import (
    GCRODR,
    KrylovResult,
    SequenceResult,
    gmres_restarted,
    greedy_order,
    pairwise_system_distances,
    solve_sequence,
)
from .lowrank_mixing import LowRankMixing
from .multigrid import MultigridVCycle, damped_jacobi_step, laplacian_5pt
from .orthoreg import orthoreg
from .proximal import LearnedProximalNetwork
from .quadratic import QuadraticLinear, quadratic_param_groups
from .spectral_conv import SpectralConv1d, SpectralConv2d
from .turboquant import MSECode, ProdCode, TurboQuantMSE, TurboQuantProd, lloyd_max_codebook, random_rotation

__all__ = [
    # turboquant
    "TurboQuantMSE",
    "TurboQuantProd",
    "MSECode",
    "ProdCode",
    "lloyd_max_codebook",
    "random_rotation",
    # spectral_conv
    "SpectralConv1d",
    "SpectralConv2d",
    # deeponet
    "DeepONet",
    "mlp",
    # multigrid
    "MultigridVCycle",
    "laplacian_5pt",
    "damped_jacobi_step",
    # lowrank_mixing
    "LowRankMixing",
    # quadratic
    "QuadraticLinear",
    "quadratic_param_groups",
    # generalized_conv
    "GeneralizedConv2d",
    # delta
    "DeltaActivation",
    "delta_accumulate",
    "fixed_point_quantize",
    # evonorm
    "EvoNormB0",
    "EvoNormS0",
    # eml
    "eml",
    "EML",
    "Const",
    "Var",
    "EMLExpr",
    "evaluate",
    "eml_e",
    "eml_exp",
    "eml_ln",
    "eml_sub",
    "eml_zero",
    # proximal
    "LearnedProximalNetwork",
    # htsr
    "HTSRFit",
    "power_law_fit",
    "htsr_alpha",
    "htsr_report",
    # orthoreg
    "orthoreg",
    # krylov_recycling
    "GCRODR",
    "KrylovResult",
    "SequenceResult",
    "gmres_restarted",
    "greedy_order",
    "pairwise_system_distances",
    "solve_sequence",
]
