import math

import pytest
import torch

from mlip.kernels.operators.eml import (
    EML,
    Const,
    Var,
    eml,
    eml_e,
    eml_exp,
    eml_ln,
    eml_sub,
    eml_zero,
    evaluate_eml_tree,
)

X = torch.tensor([0.05, 0.5, 1.0, 2.0, 7.5], dtype=torch.float64)


def test_eml_of_one_one_is_e():
    assert abs(eml(torch.tensor(1.0, dtype=torch.float64), 1.0).item() - math.e) < 1e-12
    assert abs(evaluate_eml_tree(eml_e()).item() - math.e) < 1e-12


def test_eml_x_one_is_exp():
    assert torch.allclose(eml(X, torch.ones_like(X)), torch.exp(X), rtol=1e-12, atol=0)
    assert torch.allclose(evaluate_eml_tree(eml_exp(Var("x")), {"x": X}), torch.exp(X), rtol=1e-12, atol=0)


def test_ln_as_a_tree_of_eml_and_ones():
    tree = eml_ln(Var("x"))
    # The tree uses only eml nodes, the constant 1 and x.
    assert tree == EML(Const(1.0), EML(EML(Const(1.0), Var("x")), Const(1.0)))
    assert torch.allclose(evaluate_eml_tree(tree, {"x": X}), torch.log(X), atol=1e-12, rtol=0)


def test_derived_identities():
    assert abs(evaluate_eml_tree(eml_zero()).item()) < 1e-12
    y = torch.tensor([0.3, -1.0, 2.0, 0.0, 1.1], dtype=torch.float64)
    assert torch.allclose(evaluate_eml_tree(eml_sub(Var("x"), Var("y")), {"x": X, "y": y}), X - y, atol=1e-12, rtol=0)
    # exp(ln x) = x through two levels of trees.
    assert torch.allclose(evaluate_eml_tree(eml_exp(eml_ln(Var("x"))), {"x": X}), X, atol=1e-12, rtol=1e-12)


def test_unbound_variable_is_a_clear_error():
    with pytest.raises(KeyError, match="'z'"):
        evaluate_eml_tree(eml_exp(Var("z")), {"x": X})
