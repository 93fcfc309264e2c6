"""Shared test setup.

Torch is pinned to one intra-op thread: the simulator's tensors in these tests are tiny, and on small shared CPUs the
OpenMP wake-up of a second thread costs milliseconds per matmul (measured ~8 ms per 20x400x40 float64 bmm with 2
threads vs ~30 us with 1), which would dominate the suite's runtime without changing any result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for ``_helpers``


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
