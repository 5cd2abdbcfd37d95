"""Shared test settings: deterministic, small, CPU-only."""

import os

import pytest
import torch

# Keep CI reproducible and avoid oversubscribing the 2 CI cores when tests spawn subprocesses.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
