"""Fixtures of the calculator tests: one torch thread, and the shared helpers of ``tests/model_cases.py``."""

import pytest

from model_cases import helpers
from one_thread import _one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="session")
def h():
    """Helpers: ``h.model(backend, dtype, l_max, **config)``, ``h.ethanol()``, ``h.crystal()``, ``h.data``."""
    return helpers()
