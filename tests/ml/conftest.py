import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # On a shared 2-core machine two intra-op threads spin against other processes: one thread
    # is 10-30x faster here.
    torch.set_num_threads(1)
