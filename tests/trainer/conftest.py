"""Fixtures of the trainer tests."""

import pytest
from trainer_photos import variants


@pytest.fixture(scope="session")
def photos() -> list:
    return variants(6)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    # On a shared 2-core machine two intra-op threads spin against other processes: one thread
    # is 10-30x faster here.
    torch.set_num_threads(1)
