"""One autouse fixture, imported by the conftests of the test folders that want it: one torch
thread per test (tiny models and many small linear-algebra calls are fastest on one thread,
and intra-op threads spin against each other on a shared 2-core machine)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
