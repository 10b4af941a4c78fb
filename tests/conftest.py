"""Suite-wide fixtures: one torch thread per test, and the model helpers of ``tests/model_cases.py``."""

import os

import pytest
import torch
from model_cases import helpers

# Under pytest-xdist every worker is its own process: one torch thread each keeps the
# 2-core CI machine from being oversubscribed (2 workers x 2 threads thrash).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread per test (tiny models and many small linear-algebra calls are fastest
    on one thread, and intra-op threads spin against each other on a shared 2-core machine);
    the previous count is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def h():
    """Helpers: ``h.model(backend, dtype, l_max, **config)``, ``h.ethanol()``, ``h.crystal()``, ``h.data``."""
    return helpers()
