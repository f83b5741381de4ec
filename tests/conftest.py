import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# Two cores are shared by the xdist workers: one torch thread each.
torch.set_num_threads(1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
