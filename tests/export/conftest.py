"""Fixtures of the export-stage tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a test module. The 2 CPU cores are shared: torch's OpenMP threads
    stall each other when oversubscribed, and these tiny tensors gain nothing from a second
    thread. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    torch = pytest.importorskip("torch")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
