"""The EML operator ``eml(x, y) = exp(x) - ln(y)`` and expression trees built from it.

Odrzywolek, "All elementary functions from a single binary operator" (2026,
arXiv:2603.21852): together with the constant 1, ``eml`` generates the usual
elementary functions, e.g. ``e = eml(1, 1)``, ``exp(x) = eml(x, 1)``,
``ln(x) = eml(1, eml(eml(1, x), 1))``.  Trees are small immutable objects
(:class:`Const`, :class:`Var`, :class:`EML`) evaluated on tensors by
:func:`evaluate_eml_tree`; the builders below return the trees for the standard identities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

import torch

__all__ = [
    "eml",
    "Const",
    "Var",
    "EML",
    "EMLExpr",
    "evaluate_eml_tree",
    "eml_e",
    "eml_exp",
    "eml_ln",
    "eml_sub",
    "eml_zero",
]


def eml(x: torch.Tensor | float, y: torch.Tensor | float) -> torch.Tensor:
    """``exp(x) - ln(y)``, elementwise with broadcasting.

    Real inputs need ``y > 0``; complex tensors use the principal branch of ``ln``.
    """
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    return torch.exp(x) - torch.log(y)


@dataclass(frozen=True)
class Const:
    """Leaf holding a number (the EML grammar needs only ``1``)."""

    value: float


@dataclass(frozen=True)
class Var:
    """Leaf naming an input variable."""

    name: str


@dataclass(frozen=True)
class EML:
    """Internal node ``eml(left, right)``."""

    left: "EMLExpr"
    right: "EMLExpr"


EMLExpr = Union[Const, Var, EML]


def evaluate_eml_tree(
    expr: EMLExpr,
    env: Mapping[str, torch.Tensor | float] | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Evaluate a tree; variables come from ``env`` (tensors broadcast together).

    Constants are created with ``dtype`` so float64 trees stay float64.
    """
    env = {} if env is None else env
    if isinstance(expr, Const):
        return torch.tensor(expr.value, dtype=dtype)
    if isinstance(expr, Var):
        if expr.name not in env:
            raise KeyError(f"variable {expr.name!r} is not bound; got {sorted(env)}")
        return torch.as_tensor(env[expr.name], dtype=dtype)
    if isinstance(expr, EML):
        return eml(evaluate_eml_tree(expr.left, env, dtype=dtype), evaluate_eml_tree(expr.right, env, dtype=dtype))
    raise TypeError(f"not an EML expression: {expr!r}")


ONE = Const(1.0)


def eml_e() -> EMLExpr:
    """``e = eml(1, 1)``."""
    return EML(ONE, ONE)


def eml_exp(x: EMLExpr) -> EMLExpr:
    """``exp(x) = eml(x, 1)``."""
    return EML(x, ONE)


def eml_ln(x: EMLExpr) -> EMLExpr:
    """``ln(x) = eml(1, eml(eml(1, x), 1))`` for ``x > 0``.

    ``eml(1, x) = e - ln x``; ``exp`` of that is ``e^e / x``; and
    ``e - ln(e^e / x) = ln x``.
    """
    return EML(ONE, eml_exp(EML(ONE, x)))


def eml_zero() -> EMLExpr:
    """``0 = ln(1)``."""
    return eml_ln(ONE)


def eml_sub(x: EMLExpr, y: EMLExpr) -> EMLExpr:
    """``x - y = eml(ln x, exp y)`` for ``x > 0``."""
    return EML(eml_ln(x), eml_exp(y))
