import os

import pytest
import torch

# Two cores in CI: keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def all_configurations(n: int) -> torch.Tensor:
    """Every configuration of n spins as int8 [2^n, n] (+1/-1); row k has bit i = site i."""
    idx = torch.arange(2**n)
    return (((idx[:, None] >> torch.arange(n)) & 1) * 2 - 1).to(torch.int8)


@pytest.fixture
def enumerate_configs():
    return all_configurations
