"""Fixtures of the calculator tests: one torch thread, and the shared helpers of ``tests/model_cases.py``."""

import pytest
import torch

from model_cases import helpers


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is faster and immune to oversubscription on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def h():
    """Helpers: ``h.model(backend, dtype, l_max, **config)``, ``h.ethanol()``, ``h.crystal()``, ``h.data``."""
    return helpers()
