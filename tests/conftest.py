"""Suite-wide fixtures: one torch thread per test, the model helpers of ``tests/model_cases.py``, and
``device``: the devices a hot-path test runs on (``cpu``; ``cuda`` where there is a GPU, skipped
elsewhere). ``pytest -m cuda`` selects the CUDA cases, so the same command runs them on a GPU machine."""

import os

import pytest
import torch
from model_cases import helpers

# Under pytest-xdist every worker is its own process: one torch thread each keeps the
# 2-core CI machine from being oversubscribed (2 workers x 2 threads thrash).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


#: why the CUDA cases skip here
NO_CUDA = "no CUDA device here (torch.cuda.is_available() is False)"
#: ``pytest.param`` of each device; the CUDA one is marked ``cuda`` and skipped without a GPU
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda,
                                          pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]),
]


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs on a CUDA device (skipped without one); "
                            "`pytest -m cuda` runs only these")


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """The device a test runs on: ``cpu``, and ``cuda`` (skipped without a GPU)."""
    return torch.device(request.param)


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
