import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    # These tests run many small linear-algebra calls; on a shared 2-core box
    # intra-op threads spin against each other and make them ~50x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
