"""Calculators: thin adapters from simulation packages to a trained mlip model.

``from mlip.calculators import MLIPCalculator`` (ASE).
"""

from .ase import MLIPCalculator

__all__ = ["MLIPCalculator"]
